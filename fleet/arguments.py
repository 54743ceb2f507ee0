"""Checks of the public API's arguments (fleet/__init__.py): a wrong type is a UsageError naming the
argument, as a wrong value is, never a raw TypeError or AttributeError from deep inside, and never a
value taken for something else (`down("l-abc")` released leases "l", "-", "a", …)."""
from __future__ import annotations

from typing import Any

from .errors import UsageError


def name_arg(argument: str, value: Any) -> str:
    """A non-empty string (an id, a provider's name)."""
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{argument} must be a non-empty string, got {value!r}")
    return value


def names_arg(argument: str, value: Any) -> list[str]:
    """A list (or tuple) of ids, not one id (a str is iterable too)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, set, frozenset)):
        raise UsageError(f"{argument} must be a list of ids, got {value!r}", hint=f"{argument}=[{value!r}]"
                         if isinstance(value, str) else None)
    return [name_arg(f"{argument}[{i}]", v) for i, v in enumerate(value)]


def command_arg(value: Any) -> str:
    """A command line (str), or argv (a list of str) quoted as one, as `fleet run LEASE -- …` does."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        import shlex
        value = value[0] if len(value) == 1 else shlex.join(value)
    from .config.command import TOO_LONG_HINT, too_long
    why = too_long(name_arg("command", value))
    if why is not None:
        raise UsageError(f"command: {why}", hint=TOO_LONG_HINT)
    return value


def run_args(config: Any, observers: Any, options: Any, *, config_optional: bool = False) -> None:
    """`fleet.up`'s objects: a Config (from load_config), an iterable of observers (not one), a
    RunOptions; a wrong one named here, not an AttributeError after the budget was granted.
    `run_on_lease` may be given no config (config_optional)."""
    from .config.model import Config
    from .run.types import RunOptions
    if not isinstance(config, Config) and not (config_optional and config is None):
        raise UsageError(f"config must be a fleet Config (from fleet.load_config), got {type(config).__name__}",
                         hint="config = fleet.load_config('fleet.toml')")
    if isinstance(observers, (str, bytes)) or not hasattr(observers, "__iter__"):
        raise UsageError(f"observers must be a list of RunObserver, got {type(observers).__name__}",
                         hint="observers=[my_observer]")
    if options is not None and not isinstance(options, RunOptions):
        raise UsageError(f"options must be a fleet RunOptions, got {type(options).__name__}")


def state_arg(value: Any):
    """A StateStore (from fleet.open_state()), or None for the configured one; a user's name passed
    where `state` comes first (`fleet.status("bob")`) is named as such, not an AttributeError."""
    from .state import open_state
    from .state.store import StateStore
    if value is None:
        return open_state()
    if not isinstance(value, StateStore):
        raise UsageError(f"state must be a fleet StateStore (from fleet.open_state()), got {value!r}",
                         hint=f"user={value!r}, by name" if isinstance(value, str) else None)
    return value


def user_arg(value: Any) -> str | None:
    """None (the caller) or a user's name: a number or "" would list or release no one's leases."""
    return None if value is None else name_arg("user", value)


def flag_arg(argument: str, value: Any) -> bool:
    """True or False: a templated "no" is truthy, and must not mean yes."""
    if not isinstance(value, bool):
        raise UsageError(f"{argument} must be True or False, got {value!r}")
    return value


def limits_arg(value: Any):
    """None or a BudgetLimits: anything else failed inside the budget check, with the lease locked."""
    from .money.metering import BudgetLimits
    if value is not None and not isinstance(value, BudgetLimits):
        raise UsageError(f"limits must be a BudgetLimits or None, got {type(value).__name__}",
                         hint="limits=fleet.money.metering.BudgetLimits.from_config(config)")
    return value
