"""fleet.toml → Config, validated once, up front.

Every problem becomes one line naming the file, line, key and what is allowed, e.g.
`fleet.toml:7: gpus: must be a positive integer, got -2`. tomllib keeps no positions, so `_KeyLines`
scans the source text for where each key was written. What keys exist and what they accept lives in
fleet/config/schema.py (shared with the JSON Schema for editors).
"""
from __future__ import annotations

import difflib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 and older
    import tomli as tomllib

from .command import check_length
from .locate import CONFIG_FILE, display_path as _display_path, find_config_file, find_file as _find_file
from .model import BudgetsConfig, Config, SweepConfig
from .schema import (ARRAYS, MAPS, SCHEMA_FILE, SETUP_TABLE, TABLES, TOP_LEVEL, Invalid, json_schema,
                     provider_sections, schema_text)
from .values import MAX_HEARTBEAT_TTL_S, parse_duration, parse_money
from ..errors import ConfigError, UsageError

__all__ = ["load_config", "parse_duration", "parse_money", "json_schema", "schema_text", "SCHEMA_FILE",
           "CONFIG_FILE", "OVERRIDABLE", "parse_section", "find_config_file"]

# Keys the CLI may replace (`fleet up --gpus 8 --max-duration 1h -- python x.py`).
OVERRIDABLE = ("gpus", "template", "provider", "max_duration", "command", "budget")

# ---------------------------------------------------------------- where each key was written

_KEYPART = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_DOTTED = rf"{_KEYPART}(?:\s*\.\s*{_KEYPART})*"
_ARRAY_HEADER = re.compile(rf"^\s*\[\[\s*({_DOTTED})\s*\]\]")
_TABLE_HEADER = re.compile(rf"^\s*\[\s*({_DOTTED})\s*\]")
_ASSIGN = re.compile(rf"^\s*({_DOTTED})\s*=")


def _key_parts(dotted: str) -> tuple[str, ...]:
    parts = []
    for match in re.finditer(_KEYPART, dotted):
        part = match.group(0)
        if part.startswith('"'):
            try:
                part = json.loads(part)
            except ValueError:
                part = part[1:-1]
        elif part.startswith("'"):
            part = part[1:-1]
        parts.append(part)
    return tuple(parts)


class _KeyLines:
    """Maps key paths like ('lease', 'heartbeat_ttl') or ('hosts', 1, 'port') to 1-based line numbers."""

    def __init__(self, text: str):
        self.lines: dict[tuple, int] = {}
        table: tuple = ()
        array_counts: dict[tuple, int] = {}
        in_multiline: str | None = None       # the closing delimiter of a multi-line string we are inside
        for number, line in enumerate(text.splitlines(), start=1):
            if in_multiline:
                if in_multiline in line:
                    in_multiline = None
                continue
            if match := _ARRAY_HEADER.match(line):
                path = _key_parts(match.group(1))
                array_counts[path] = array_counts.get(path, -1) + 1
                table = path + (array_counts[path],)
                self.lines.setdefault(table, number)
                continue
            if match := _TABLE_HEADER.match(line):
                table = _key_parts(match.group(1))
                self.lines.setdefault(table, number)
                continue
            if match := _ASSIGN.match(line):
                self.lines.setdefault(table + _key_parts(match.group(1)), number)
                rest = line[match.end():]
                for delimiter in ('"""', "'''"):
                    if rest.count(delimiter) % 2 == 1:
                        in_multiline = delimiter
                        break

    def find(self, path: tuple) -> int | None:
        """The line of `path`, else of its closest written parent (inline tables, arrays)."""
        for end in range(len(path), 0, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None


def _display(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# ---------------------------------------------------------------- validation

@dataclass
class _Problem:
    line: int | None
    key: str
    message: str
    hint: str | None = None


class _Checker:
    """Walks the parsed document, converting values and collecting problems (the earliest is reported)."""

    def __init__(self, lines: _KeyLines):
        self.lines = lines
        self.problems: list[_Problem] = []

    def problem(self, path: tuple, message: str, hint: str | None = None) -> None:
        self.problems.append(_Problem(self.lines.find(path), _display(path), message, hint))

    def convert(self, path: tuple, key, value: Any) -> Any:
        try:
            return key.kind.convert(value)
        except Invalid as exc:
            self.problem(path, str(exc))
            return None

    def unknown(self, path: tuple, allowed: list[str]) -> None:
        name = str(path[-1])
        home = None
        if len(path) == 1:   # a key of a table written at the top: that table, before any look-alike
            home = next((t for t, (_, keys) in TABLES.items() if name in keys), None)
            home = home or next((a for a, (_, keys, _r) in ARRAYS.items() if name in keys), None)
            home = home or next((s for s, settings in provider_sections().items() if name in settings.keys), None)
        close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
        if home:
            hint = f"it belongs under [{home}]"
        elif close:
            hint = f"did you mean '{close[0]}'?"
        else:
            hint = "allowed: " + ", ".join(allowed)
        self.problem(path, "unknown key", hint)

    def table(self, path: tuple, value: Any) -> dict | None:
        if not isinstance(value, dict):
            self.problem(path, f"must be a table ([{_display(path)}]), got {type(value).__name__}")
            return None
        return value

    def fixed_table(self, path: tuple, value: dict, keys: dict) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, item in value.items():
            if name not in keys:
                self.unknown(path + (name,), list(keys))
                continue
            converted = self.convert(path + (name,), keys[name], item)
            if converted is not None:
                out[keys[name].target or name] = converted
        return out

    def check(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Returns Config keyword arguments for everything the file sets."""
        fields: dict[str, Any] = {}
        for name, value in doc.items():
            path = (name,)
            if name == "setup" and isinstance(value, dict):   # the [setup] table form
                fields.update(self.fixed_table(path, value, SETUP_TABLE))
            elif name in TOP_LEVEL:
                converted = self.convert(path, TOP_LEVEL[name], value)
                if converted is not None:
                    fields[TOP_LEVEL[name].target or name] = converted
            elif name in TABLES:
                if (table := self.table(path, value)) is not None:
                    converted = self.fixed_table(path, table, TABLES[name][1])
                    if name == "budgets":
                        fields["budgets"] = BudgetsConfig(**converted)
                    elif name == "sweep":
                        fields["sweep"] = SweepConfig(**converted)
                    else:
                        fields.update(converted)
            elif name in MAPS:
                if (table := self.table(path, value)) is not None:
                    fields[name] = self.mapping(path, table, *MAPS[name][1:])
            elif name in ARRAYS:
                fields[name] = self.array(path, value, *ARRAYS[name][1:])
            elif (owner := _section_owner(name)) is not None:
                provider, settings = owner
                parsed = self.section(path, value, settings)
                if parsed is not None:
                    fields.setdefault("provider_settings", {})[provider] = parsed
            else:
                self.unknown(path, list(TOP_LEVEL) + list(TABLES) + list(MAPS) + list(ARRAYS)
                             + list(provider_sections()))
        return fields

    def section(self, path: tuple, value: Any, settings) -> Any:
        """A provider's own section, checked against the keys it declares (fleet/providers/base.py)."""
        before = len(self.problems)
        if settings.array:
            items = self.array(path, value, settings.keys, settings.required)
        elif (table := self.table(path, value)) is not None:
            items = self.fixed_table(path, table, settings.keys)
        else:
            return None
        return settings.from_fields(items) if len(self.problems) == before else None

    def mapping(self, path: tuple, table: dict, key_pattern: str | None, key) -> dict[str, Any]:
        out = {}
        for name, value in table.items():
            if key_pattern and not re.fullmatch(key_pattern, name):
                what = "an environment variable name" if path == ("env",) else "a short name"
                self.problem(path + (name,), f"must be {what} matching {key_pattern}")
                continue
            converted = self.convert(path + (name,), key, value)
            if converted is not None:
                out[name] = converted
        return out

    def array(self, path: tuple, value: Any, keys: dict, required: tuple[str, ...]) -> list[dict[str, Any]]:
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            self.problem(path, f"must be an array of tables ([[{path[0]}]] blocks)")
            return []
        out = []
        for index, item in enumerate(value):
            before = len(self.problems)
            converted = self.fixed_table(path + (index,), item, keys)
            missing = [k for k in required if k not in item]
            if missing and len(self.problems) == before:   # a misspelt key explains it better
                self.problem(path + (index,), f"missing required key '{missing[0]}'")
            elif len(converted) == len(item):
                out.append(converted)
        return out


def _section_owner(name: str):
    """(provider, settings class) owning top-level key `name`; None for no provider's section."""
    from ..providers.registry import section_owner
    return section_owner(name)


def parse_section(settings, value: Any, *, where: str = CONFIG_FILE, text: str = "") -> Any:
    """One provider section given as data (`ProviderSettings.parse`): the same checks and the same
    one-line errors as in fleet.toml, with line numbers when the source `text` is given."""
    checker = _Checker(_KeyLines(text))
    parsed = checker.section((settings.section,), value, settings)
    if checker.problems:
        first = min(checker.problems, key=lambda p: p.line or 0)
        raise ConfigError(first.message, path=where, line=first.line, key=first.key, hint=first.hint)
    return parsed


# ---------------------------------------------------------------- loading

def _default_project(base_dir: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", base_dir.name).strip("-._")[:63]
    return name or "experiment"


def _read(file: Path, shown: str) -> dict[str, Any]:
    from ..regular_files import read_config_file
    try:
        text = read_config_file(file).decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text; fleet.toml must be UTF-8", path=shown) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", path=shown) from None
    from .keydepth import check_key_depth
    check_key_depth(text, shown)
    try:
        doc = tomllib.loads(text)
    except RecursionError:
        raise ConfigError("invalid TOML: arrays or tables nested too deeply", path=shown) from None
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        line = None
        if match := re.search(r"\(at line (\d+), column (\d+)\)", message):
            line = int(match.group(1))
            message = message[:match.start()].strip() + f" (column {match.group(2)})"
        elif match := re.search(r"\(at end of document\)", message):
            line = max(1, len(text.splitlines()))
            message = message[:match.start()].strip() + " (at end of file)"
        raise ConfigError(f"invalid TOML: {message}", path=shown, line=line) from None
    except ValueError:   # not a TOMLDecodeError: int() refuses an integer of more than 4300 digits
        long = re.search(r"[0-9_]{4300,}", text)
        raise ConfigError("invalid TOML: an integer too long to read (over 4300 digits)", path=shown,
                          line=text.count("\n", 0, long.start()) + 1 if long else None) from None
    checker = _Checker(_KeyLines(text))
    fields = checker.check(doc)
    if checker.problems:
        first = min(checker.problems, key=lambda p: p.line or 0)
        raise ConfigError(first.message, path=shown, line=first.line, key=first.key, hint=first.hint)
    fields["raw"] = doc
    return fields


def _apply_overrides(fields: dict[str, Any], overrides: dict[str, Any]) -> None:
    for name, value in overrides.items():
        if not isinstance(name, str):
            raise UsageError(f"overrides: a setting's name must be a string, got {name!r}")
        if value is None:
            continue
        if name == "env":   # `--env` / `--env-file` (fleet/config/env.py): on top of [env], as validated there
            _check_env(value)
            fields["env"] = {**fields.get("env", {}), **value}
            continue
        if name == "setup_always":   # `--no-setup-cache`
            fields["setup_always"] = bool(value) or fields.get("setup_always", False)
            continue
        # the command comes after `--` (fleet up/sweep have no --command flag to name)
        flag = "the command after --" if name == "command" else "--" + name.replace("_", "-")
        if name not in TOP_LEVEL:
            raise UsageError(f"{flag}: not a setting the command line can override")
        key = TOP_LEVEL[name]
        if name == "command" and isinstance(value, (list, tuple)):   # words after `--`
            from .command import command_line
            value = command_line(value)
        try:
            fields[key.target or name] = key.kind.convert(value)
        except Invalid as exc:
            raise UsageError(f"{flag}: {exc}") from None


def _split_gpu_request(fields: dict[str, Any]) -> None:
    """`gpus` is parsed as one GpuRequest (count and type); Config holds them apart."""
    request = fields.get("gpus")
    if request is not None and not isinstance(request, int):
        fields["gpus"], fields["gpu_type"] = request.count, request.type


def _check_env(value: Any) -> None:
    """The CLI builds `env` from KEY=VALUE words; a library caller's must be the same str -> str"""
    from .env import parse_assignment
    if not isinstance(value, Mapping):
        raise UsageError(f"overrides['env'] must be a dict of str to str, got {type(value).__name__}",
                         hint="overrides={'env': {'LR': '3e-4'}}")
    for key, text in value.items():
        if not isinstance(key, str) or not isinstance(text, str):    # the value is not shown: it may be a secret
            shown = repr(key) if isinstance(key, str) else type(key).__name__
            raise UsageError(f"overrides['env'] must be a dict of str to str, got {shown}: {type(text).__name__}")
        if parse_assignment(f"{key}={text}", where="overrides['env']")[0] != key:
            raise UsageError(f"overrides['env']: {key!r} is not an environment variable name")


def load_config(path: str | Path | None = None, *, cwd: str | Path | None = None,
                overrides: dict[str, Any] | None = None) -> Config:
    """Load and validate fleet.toml (from `cwd` when `path` is None).

    With no file, a Config is still built when `overrides` gives a command (`fleet up -- CMD`);
    base_dir is then `cwd`. Raises ConfigError / UsageError (exit code 2) with one line.
    """
    if not isinstance(path, (str, Path, type(None))) or not isinstance(cwd, (str, Path, type(None))):
        raise UsageError(f"path and cwd must be a path (str or Path) or None, got {path!r}, {cwd!r}")
    if overrides is not None and not isinstance(overrides, Mapping):
        raise UsageError(f"overrides must be a dict of settings, got {type(overrides).__name__}",
                         hint="overrides={'gpus': 8, 'command': 'python train.py'}")
    cwd_path = (Path(cwd) if cwd is not None else Path.cwd()).resolve()
    overrides = dict(overrides or {})
    file = _find_file(path, cwd_path)
    if file is None and not overrides.get("command"):
        raise ConfigError(f"no {CONFIG_FILE} in {cwd_path}",
                          hint="`fleet init` creates one; or pass -f FILE, or a command after `--`")
    fields: dict[str, Any] = {}
    shown = ""
    if file is not None:
        file = file.resolve()
        shown = _display_path(file, cwd_path)
        fields = _read(file, shown)
    if os.environ.get("FLEET_STATE_URL") and "state_url" not in overrides:
        # The environment wins over the file (docs/team.md): a fleet.toml is often someone else's (a
        # cloned repository), and its state_url took the run out of the team's budgets and ledger.
        fields["state_url"] = os.environ["FLEET_STATE_URL"]
    _apply_overrides(fields, overrides)
    ttl = os.environ.get("FLEET_HEARTBEAT_TTL", "").strip()
    if ttl:
        try:
            fields["heartbeat_ttl_s"] = parse_duration(ttl, max_s=MAX_HEARTBEAT_TTL_S)
        except UsageError as exc:
            raise UsageError(f"FLEET_HEARTBEAT_TTL: {exc.message}") from None
    if not fields.get("command"):
        raise ConfigError("required: the command to run, e.g. command = \"python train.py\"", path=shown or None,
                          key="command", hint="or give it after `fleet up --`")
    check_length(fields, shown)
    _split_gpu_request(fields)
    base_dir = file.parent if file is not None else cwd_path
    fields.setdefault("project", _default_project(base_dir))
    fields.setdefault("name", fields["project"])
    return Config(path=file, base_dir=base_dir, **fields)
