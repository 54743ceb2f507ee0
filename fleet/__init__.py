"""fleet: lease GPU machines for an experiment, run it on pinned inputs, destroy them. Always.

Everything the CLI does is importable (imported lazily, so `import fleet` stays cheap):

    import fleet
    config = fleet.load_config("examples/digits/fleet.toml", overrides={"gpus": 8})
    summary = fleet.up(config)                 # a fleet.RunSummary: summary.status, summary.exit_code
    fleet.status()                             # live leases with their machines
    fleet.down([], all_leases=True)            # release every live lease of yours
"""
from __future__ import annotations

from importlib import import_module

# Not `from typing import TYPE_CHECKING`: importing typing costs ~4 ms of every `fleet` command, and
# type checkers treat a constant of this name the same way.
TYPE_CHECKING = False
if TYPE_CHECKING:    # what static type checkers see; at run time each name is imported on first use
    from typing import Any

    from .config.loader import load_config as load_config
    from .errors import ExitCode as ExitCode, FleetError as FleetError
    from .leases import down as down, extend as extend, status as status
    from .providers import get_provider as get_provider
    from .run.context import Events as Events
    from .run_logs import follow_logs as follow_logs
    from .state import open_state as open_state
    from .run.observers import RunObserver as RunObserver
    from .run.pipeline import run_on_lease as run_on_lease, up as up
    from .run.summary import RunSummary as RunSummary
    from .run.types import RunOptions as RunOptions

__version__ = "0.1.0"

_EXPORTS = {
    "up": ("fleet.run.pipeline", "up"),
    "RunSummary": ("fleet.run.summary", "RunSummary"),
    "RunOptions": ("fleet.run.types", "RunOptions"),
    "RunObserver": ("fleet.run.observers", "RunObserver"),
    "Events": ("fleet.run.context", "Events"),
    "load_config": ("fleet.config.loader", "load_config"),
    "status": ("fleet.leases", "status"),
    "down": ("fleet.leases", "down"),
    "extend": ("fleet.leases", "extend"),
    "run_on_lease": ("fleet.run.pipeline", "run_on_lease"),
    "follow_logs": ("fleet.run_logs", "follow_logs"),
    "open_state": ("fleet.state", "open_state"),
    "get_provider": ("fleet.providers", "get_provider"),
    "FleetError": ("fleet.errors", "FleetError"),
    "ExitCode": ("fleet.errors", "ExitCode"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'fleet' has no attribute {name!r}") from None
    return getattr(import_module(module), attr)
