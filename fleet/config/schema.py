"""The one table of fleet.toml keys: their kinds, defaults and help.

Both the validator (fleet/config/loader.py) and the JSON Schema for editors (`json_schema()`, shipped as
fleet/fleet.schema.json) are derived from `TOP_LEVEL` / `TABLES` below, so key names and types have a
single source of truth. Each *kind* knows how to convert a TOML value and how to describe itself as a
JSON Schema fragment; a new key is one line in a table.

`python -m fleet.config.schema --write` regenerates the shipped schema file.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

from ..errors import UsageError
from .values import (DURATION_PATTERN, MAX_DURATION_S, MAX_GPUS, MAX_GRACE_S, MAX_HEARTBEAT_TTL_S, MAX_HOST_GPUS, MAX_IDLE_MINUTES, MONEY_PATTERN, SIZE_PATTERN, parse_duration, parse_money, parse_size)

SCHEMA_FILE = Path(__file__).parent.parent / "fleet.schema.json"   # at the package root, where editors and examples point

# ---------------------------------------------------------------- kinds

_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
_ENV_NAME_RE = r"^[A-Za-z_][A-Za-z0-9_]*$"


class Invalid(Exception):
    """A value is wrong; the message says what is allowed (the caller adds file:line and key)."""


def _fmt(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, str) else str(value)


def _no_nul(text: str) -> str:
    # A NUL cannot be passed in an argument, an environment variable or a path: refused here, named,
    # instead of surfacing as a traceback on the machine.
    if "\x00" in text:
        raise Invalid("must not contain a NUL character (\\u0000)")
    return text


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"must be a non-empty string, got {_fmt(value)}")
    return _no_nul(value)


def _env_value(value: Any) -> str:
    """An [env] value: a string as written (empty allowed), a number or a boolean as the shell would
    spell it (LR = 3e-4 → "0.0003", DEBUG = true → "true")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        return _no_nul(value)
    raise Invalid(f"must be a string, number or true/false, got {_fmt(value)}")


def _name(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(_NAME_RE, value):
        raise Invalid("must be 1-63 letters, digits, '.', '_' or '-' starting with a letter or digit, "
                      f"got {_fmt(value)}")
    return value


def _relpath(value: Any) -> str:
    text = _string(value)
    parts = Path(text).parts
    if Path(text).is_absolute() or ".." in parts:
        raise Invalid(f"must be a path relative to the experiment directory, without '..', got {_fmt(value)}")
    return text


def _int_range(lo: int, hi: int | None, what: str) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= lo and (hi is None or value <= hi)
        if not ok:
            raise Invalid(f"must be {what}, got {_fmt(value)}")
        return value
    return convert


def _count(hi: int, what: str) -> Callable[[Any], int]:
    """A positive integer up to `hi`: too big gets its own message naming the limit."""
    positive = _int_range(1, None, "a positive integer")

    def convert(value: Any) -> int:
        value = positive(value)
        if value > hi:
            raise Invalid(f"must be at most {hi} {what}, got {value}")
        return value
    return convert


def _number_range(lo: float, hi: float | None, what: str, *, lo_open: bool) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (value > lo if lo_open else value >= lo) and (hi is None or value <= hi)
        if not ok:
            raise Invalid(f"must be {what}, got {_fmt(value)}")
        return float(value)
    return convert


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"must be true or false, got {_fmt(value)}")
    return value


def _wrap(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        try:
            return parse(value)
        except UsageError as exc:
            raise Invalid(exc.message) from None
    return convert


def choice(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in choices:
            raise Invalid(f"must be one of {', '.join(repr(c) for c in choices)}, got {_fmt(value)}")
        return value
    return convert


def _provider_name(value: Any) -> str:
    """A registered provider (fleet/providers/registry.py): fleet's own or a third party's."""
    from ..providers import registry
    if isinstance(value, str) and value in registry.entries():
        return value
    listed = registry.names(listed_only=True)
    raise Invalid(f"must be one of {', '.join(repr(n) for n in listed)}, got {_fmt(value)}")


def _env_names(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and re.fullmatch(_ENV_NAME_RE, v) for v in value):
        raise Invalid(f"must be an array of environment variable names like [\"HF_TOKEN\"], got {_fmt(value)}")
    return list(value)


def _fraction(value: Any) -> Decimal:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1
    if not ok:
        raise Invalid(f"must be a fraction above 0 and at most 1 (like 0.8), got {_fmt(value)}")
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


@dataclass(frozen=True)
class Kind:
    convert: Callable[[Any], Any]
    schema: dict[str, Any]


def _duration_schema(max_s: int) -> dict[str, Any]:
    return {"anyOf": [{"type": "integer", "minimum": 1, "maximum": max_s},
                      {"type": "string", "pattern": DURATION_PATTERN}]}


def _duration(max_s: int) -> Kind:
    return Kind(_wrap(lambda v: parse_duration(v, max_s=max_s)), _duration_schema(max_s))


_MONEY_SCHEMA = {"anyOf": [{"type": "number", "exclusiveMinimum": 0},
                           {"type": "string", "pattern": MONEY_PATTERN}]}

STRING = Kind(_string, {"type": "string", "minLength": 1})
NAME = Kind(_name, {"type": "string", "pattern": _NAME_RE})
RELPATH = Kind(_relpath, {"type": "string", "minLength": 1})


def _gpu_request(value: Any) -> Any:
    """A count or TYPE[:COUNT] (fleet/gpus.py) → GpuRequest; the loader splits it into gpus/gpu_type."""
    from ..gpus import GpuRequestError, parse_gpu_request
    try:
        return parse_gpu_request(value, max_count=MAX_GPUS)
    except GpuRequestError as exc:
        raise Invalid(str(exc)) from None


GPU_TYPE_PATTERN = r"^\s*[A-Za-z][A-Za-z0-9 _]*(-[0-9]+\s*(GB|gb|G|g|GiB))?\s*(:\s*[0-9]+\s*)?$"
GPUS = Kind(_gpu_request, {"anyOf": [{"type": "integer", "minimum": 1, "maximum": MAX_GPUS},
                                     {"type": "string", "pattern": GPU_TYPE_PATTERN}]})
HOST_GPUS = Kind(_count(MAX_HOST_GPUS, "GPUs per host"), {"type": "integer", "minimum": 1, "maximum": MAX_HOST_GPUS})
MACHINES = Kind(_count(MAX_GPUS, "machines"), {"type": "integer", "minimum": 1, "maximum": MAX_GPUS})
PORT = Kind(_int_range(1, 65535, "a port number 1-65535"), {"type": "integer", "minimum": 1, "maximum": 65535})
BOOL = Kind(_boolean, {"type": "boolean"})
DURATION = _duration(MAX_DURATION_S)
HEARTBEAT_TTL = _duration(MAX_HEARTBEAT_TTL_S)
GRACE = _duration(MAX_GRACE_S)
MONEY = Kind(_wrap(parse_money), _MONEY_SCHEMA)
PRICE = Kind(_wrap(lambda v: parse_money(v, allow_zero=True)),
             {"anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": MONEY_PATTERN}]})
FRACTION = Kind(_fraction, {"type": "number", "exclusiveMinimum": 0, "maximum": 1})
PERCENT = Kind(_number_range(0, 100, "a percentage from 0 to 100", lo_open=False),
               {"type": "number", "minimum": 0, "maximum": 100})
IDLE_MINUTES = Kind(_number_range(0, MAX_IDLE_MINUTES, f"a number of minutes above 0, at most {MAX_IDLE_MINUTES}",
                                  lo_open=True), {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_IDLE_MINUTES})
POSITIVE_NUMBER = Kind(_number_range(0, MAX_DURATION_S, f"a number above 0, at most {MAX_DURATION_S}", lo_open=True),
                       {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_DURATION_S})
PROVIDER = Kind(_provider_name, {"type": "string"})   # json_schema() lists the registered names
RECOVERY_MODES = ("spot", "always", "never")


def _recovery(value: Any) -> str:
    if value not in RECOVERY_MODES:
        raise Invalid(f"must be one of {', '.join(RECOVERY_MODES)}, got {_fmt(value)}")
    return value


RECOVERY = Kind(_recovery, {"type": "string", "enum": list(RECOVERY_MODES)})
RESTARTS = Kind(_int_range(0, 100, "a whole number of restarts from 0 to 100"),
                {"type": "integer", "minimum": 0, "maximum": 100})
ENV_VALUE = Kind(_env_value, {"type": ["string", "number", "boolean"]})
ENV_NAMES = Kind(_env_names, {"type": "array", "items": {"type": "string", "pattern": _ENV_NAME_RE}})


# ---------------------------------------------------------------- the key table

@dataclass(frozen=True)
class Key:
    kind: Kind
    help: str
    target: str | None = None        # Config (or sub-config) attribute; None: same as the key
    default: Any = None              # as a user would write it in fleet.toml (documentation only)


TOP_LEVEL: dict[str, Key] = {
    "project": Key(NAME, "Project name, used to group runs, costs and budgets. Default: the directory name."),
    "name": Key(NAME, "Experiment name. Default: the project name."),
    "command": Key(STRING, "Command run on every machine (or GPU slot) from the experiment directory. "
                           "Required unless given after `fleet up --`."),
    "setup": Key(Kind(_string, {"oneOf": [
                     {"type": "string", "minLength": 1},
                     {"type": "object", "additionalProperties": False, "required": ["command"],
                      "properties": {"command": {"type": "string", "minLength": 1}, "always": {"type": "boolean"}}}]}),
                 "Command run once per machine before `command`, e.g. installing requirements; or a "
                 "[setup] table (command, always)."),
    "gpus": Key(GPUS, "Total GPUs to lease, optionally of one type: 8, \"A100:8\", \"A100-80GB:8\", \"L4\". "
                      "Machines are added from the template until they add up. Default: one machine."),
    "template": Key(STRING, "Machine template: local-1gpu, local-4gpu, local-8gpu, an AWS template, "
                            "'hosts' for ssh. Default: the provider's own (local: local-4gpu; with a GPU "
                            "type: the cheapest template that has it)."),
    "provider": Key(PROVIDER, "Where machines come from: local (sshd sandboxes on this computer), ssh "
                              "(your [[hosts]]), aws.", default="local"),
    "per_gpu": Key(BOOL, "true: one process per GPU slot (FLEET_RANK/FLEET_WORLD_SIZE); false: one per "
                         "machine.", default=False),
    "outputs": Key(RELPATH, "Directory (relative to the experiment) fetched home into runs/<run-id>/.",
                   default="outputs"),
    "outputs_max": Key(Kind(_wrap(parse_size), {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": SIZE_PATTERN}]}), "The most bytes of outputs that come home from one machine (sparse files count their full size), e.g. 500G or none; what passes it is not fetched and the run ends with its outputs incomplete.", target="outputs_max_bytes", default="100G"),
    "max_duration": Key(DURATION, "Hard limit on a lease; machines destroy themselves at this deadline.",
                        target="max_duration_s", default="4h"),
    "python": Key(STRING, "Python interpreter on the machines. Local default: the controller's own."),
    "checkpoint_interval": Key(DURATION, "Upload $FLEET_CHECKPOINT_DIR of every machine to the store this often "
                                         "while the command runs (only changed chunks). It is always uploaded when "
                                         "the command ends or is stopped. Default: only then.",
                               target="checkpoint_interval_s"),
    "recovery": Key(RECOVERY, "When lost machines are replaced and the run resumed from its last checkpoint: "
                              "spot (only spot machines, after an interruption), always (any lost machine), "
                              "never.", default="spot"),
    "max_restarts": Key(RESTARTS, "How many times a run may be resumed on new machines.", default=3),
    "user": Key(STRING, "Who is running (for budgets and records). Default: the login name."),
    "budget": Key(MONEY, "Per-run budget in US dollars; the run is refused or stopped when it would exceed it."),
    "store": Key(STRING, "Snapshot store URL or path. Default: $FLEET_HOME/store."),
    "cache_max": Key(STRING, "Size cap of each host's chunk cache (kept between leases), e.g. 20G or none. "
                             "Default: 50G."),
    "cache_dir": Key(STRING, "Chunk cache directory on cloud machines (an instance store or cache volume). "
                             "Default: ~/.cache/fleet/chunks."),
    "state_url": Key(STRING, "Shared state database URL for team mode (postgresql://…). Default: SQLite in "
                             "$FLEET_HOME."),
    "secrets": Key(ENV_NAMES, "Names of environment variables passed from your shell to the run, always "
                              "redacted in logs and records."),
}

def _sweep_params(value: Any) -> dict[str, tuple[str, ...]]:
    """`params = { lr = [1e-3, 3e-4], hidden = [32, 64] }`: each name a list of numbers or strings."""
    if not isinstance(value, dict) or not value:
        raise Invalid(f"must be a table of name = [values], got {_fmt(value)}")
    out = {}
    for name, raw in value.items():
        if not re.fullmatch(_NAME_RE, str(name)):
            raise Invalid(f"{name!r} is not a parameter name (letters, digits, _)")
        items = raw if isinstance(raw, list) else [raw]
        if not items or any(isinstance(v, (dict, list, bool)) for v in items):
            raise Invalid(f"{name}: expected a list of numbers or strings")
        values = tuple(str(v) for v in items)
        if len(set(values)) != len(values):
            raise Invalid(f"{name}: a value is repeated")
        out[str(name)] = values
    return out


SWEEP_PARAMS = Kind(_sweep_params, {"type": "object", "minProperties": 1, "additionalProperties": {
    "type": "array", "minItems": 1, "items": {"type": ["number", "string"]}}})
GPUS_PER_TRIAL = Kind(_count(MAX_GPUS, "GPUs per trial"), {"type": "integer", "minimum": 1, "maximum": MAX_GPUS})
SWEEP_COUNT = Kind(_count(10_000, "trials"), {"type": "integer", "minimum": 1, "maximum": 10_000})
SEED = Kind(_int_range(0, None, "a whole number from 0"), {"type": "integer", "minimum": 0})

# Tables with fixed keys: name → (help, keys). [lease] fills Config fields, [budgets] Config.budgets,
# [sweep] Config.sweep.
TABLES: dict[str, tuple[str, dict[str, Key]]] = {
    "lease": ("Lease keep-alive.", {
        "heartbeat_ttl": Key(HEARTBEAT_TTL, "While fleet runs it extends each machine's deadline by this much at a "
                                       "time; if fleet dies, machines are gone within it. Env "
                                       "FLEET_HEARTBEAT_TTL overrides.", target="heartbeat_ttl_s", default="5m"),
    }),
    "budgets": ("Spending limits beyond the per-run `budget`, in US dollars.", {
        "project_monthly": Key(MONEY, "Monthly limit for this project."),
        "user_monthly": Key(MONEY, "Monthly limit per user."),
        "warn_at": Key(FRACTION, "Warn when this fraction of a budget is spent.", target="warn_fraction",
                       default=0.8),
        "grace": Key(GRACE, "Time a run gets to stop cleanly after its budget runs out.", target="grace_s",
                     default="30s"),
        "idle_gpu_percent": Key(PERCENT, "Idle policy: GPU utilisation below this percentage counts as idle."),
        "idle_minutes": Key(IDLE_MINUTES, "Idle policy: stop a run idle for this many minutes."),
    }),
    "sweep": ("`fleet sweep`: trials of the experiment on a warm pool; command-line flags override.", {
        "command": Key(STRING, "Command with {name} placeholders. Default: `command`."),
        "params": Key(SWEEP_PARAMS, "Parameters: name = [values]. Trials get them as {name} and FLEET_PARAM_<NAME>."),
        "samples": Key(SWEEP_COUNT, "Random search: this many trials (default: every combination)."),
        "seed": Key(SEED, "Seed for `samples` (the same seed draws the same trials)."),
        "parallel": Key(SWEEP_COUNT, "Trials at once.", default=1),
        "gpus_per_trial": Key(GPUS_PER_TRIAL, "GPUs each trial gets.", default=1),
        "trial_timeout": Key(DURATION, "A trial still running after this is stopped. Default: max_duration.", target="trial_timeout_s"),
        "idle_release": Key(DURATION, "A pool machine waiting this long on the budget with no trial to run is released (default: at once; with the queue empty, always at once).", target="idle_release_s"),
        "budget": Key(MONEY, "US dollars for the whole sweep: the pool's machines, every trial included."),
        "stop_if": Key(STRING, "Early stopping from the trial's metrics.json, e.g. \"val_loss > 2.0 after 3 epochs\"."),
    }),
    "queue": ("Waiting for GPU slots on team hosts (`--wait`): first come, first served.", {
        "max_gpus_per_user": Key(HOST_GPUS, "GPUs one user may hold on the team's hosts at once; a request past "
                                            "it waits (with --wait) without holding up other users.",
                                 target="queue_max_gpus_per_user"),
    }),
}

# `setup` as a table: [setup] command = "...", always = true (run even when the setup cache says it
# would install nothing, fleet/setup_cache.py).
SETUP_TABLE: dict[str, Key] = {
    "command": Key(STRING, "Command run once per machine before `command`.", target="setup"),
    "always": Key(BOOL, "Run it on every lease, even when the venv was built by the same install-only setup "
                        "from the same files (the setup cache skips it otherwise).", target="setup_always",
                  default=False),
}

# Tables whose keys are the user's own names: name → (help, pattern their names must match or None, value).
MAPS: dict[str, tuple[str, str | None, Key]] = {
    "env": ("Environment variables set for setup and command: NAME = \"value\" (numbers and true/false "
            "too); `fleet up --env NAME=VALUE` and `--env-file FILE` add to them.", _ENV_NAME_RE,
            Key(ENV_VALUE, "value")),
    "data": ("Data directories pinned as snapshots and placed on machines: name = \"path\".", _NAME_RE,
             Key(STRING, "path")),
    "prices": ("Price overrides in US dollars per hour: template or instance type = price.", None,
               Key(PRICE, "USD/hour")),
}

# Arrays of tables: name → (help, keys, required keys). Providers declare their own sections
# (fleet/providers/*/settings.py, e.g. [aws] and [[hosts]]); `provider_sections()` finds them.
ARRAYS: dict[str, tuple[str, dict[str, Key], tuple[str, ...]]] = {}


def provider_sections(*, listed_only: bool = False) -> dict[str, Any]:
    """Section name → the settings class of the provider that owns it (imports the providers)."""
    from ..providers import registry
    listed = registry.names(listed_only=True) if listed_only else None
    return {settings.section: settings for name, settings in registry.settings_classes().items()
            if listed is None or name in listed}


def json_schema() -> dict[str, Any]:
    """JSON Schema for fleet.toml, built from the key table above (fleet/config/json_schema.py)."""
    from .json_schema import json_schema as build
    return build()


def schema_text() -> str:
    from .json_schema import schema_text as text
    return text()


if __name__ == "__main__":
    import sys
    if sys.argv[1:] == ["--write"]:
        SCHEMA_FILE.write_text(schema_text(), encoding="utf-8")
        print(f"wrote {SCHEMA_FILE}")
    else:
        sys.stdout.write(schema_text())
