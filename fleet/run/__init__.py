"""The run pipeline: `up`, `run_on_lease`, the stage sequence (pipeline.py) and its typed results.

Imported lazily, like `fleet` itself: `fleet.run.RunSummary` loads only what it names.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "up": "pipeline", "run_on_lease": "pipeline", "Pipeline": "pipeline", "STAGES": "pipeline",
    "RunSummary": "summary", "RunObserver": "observers", "Observers": "observers",
    "Events": "context", "SilentEvents": "context", "RunContext": "context",
    "Machines": "machines", "SSHMachines": "machines",
    "Offer": "types", "BudgetGrant": "types", "PinnedInputs": "types", "StagedInputs": "types",
    "ExecResult": "types", "Collected": "types", "Released": "types", "Cost": "types", "RecordRef": "types",
    "RunOptions": "types", "RerunOf": "types",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'fleet.run' has no attribute {name!r}") from None
    return getattr(import_module(f"{__name__}.{module}"), name)
