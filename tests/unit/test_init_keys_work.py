"""Every key `fleet init` writes works: set or commented out, general or in a provider's section, each
is read by the loader into the model (a different value gives a different Config), and the field it
lands in is read by fleet's code outside the config package. The plan-shaping keys also change the
plan `fleet up --dry-run` shows.

The keys come from the starter itself (fleet/config/starter.py, every provider's `starter_block`), so
a key added to the starter without a way to change it here fails with its name: give it an
alternative value in ALTERNATIVES, or take it out of the starter if nothing reads it.
"""
from __future__ import annotations

import ast
import dataclasses
import re
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from fleet.config.loader import load_config
from fleet.config.schema import TOP_LEVEL
from fleet.config.starter import starter_text

FLEET = Path(__file__).resolve().parents[2] / "fleet"

# A second valid value for keys the generic rule (numbers + 1, booleans flipped, strings extended,
# lists grown) cannot change validly: choices, durations, patterns, tables.
ALTERNATIVES: dict[tuple, Any] = {
    ("provider",): "ssh",
    ("template",): "local-1gpu",
    ("gpus",): 8,
    ("outputs",): "results",
    ("max_duration",): "2h",
    ("checkpoint_interval",): "20m",
    ("recovery",): "never",
    ("cache_max",): "10G",
    ("outputs_max",): "20G",
    ("state_url",): "postgresql://fleet@db2.example/fleet",
    ("store",): "s3://other-bucket/fleet",
    ("lease", "heartbeat_ttl"): "7m",
    ("budgets", "grace"): "1m",
    ("budgets", "warn_at"): 0.5,
    ("sweep", "trial_timeout"): "20m",
    ("sweep", "params"): {"lr": [0.5]},
    ("sweep", "stop_if"): "val_loss > 3.0 after 2 epochs",
    ("sweep", "command"): "python train.py --lr {lr}",
    ("data", "digits"): "data/other",
    ("hosts", 0, "address"): "gpu2.example.org",
    ("hosts", 0, "gpu_model"): "L4",
    ("aws", "connect"): "private",
    ("aws", "stack"): "prod",
    ("aws", "stack_dir"): "stacks",
    ("aws", "outputs"): "other-outputs.json",
    ("slurm", "gpu_flag"): "gpus-per-node",
    ("slurm", "wait"): "10m",
    ("slurm", "login"): "you@login2.cluster.org",
    ("slurm", "jump"): "you@gateway2.org:2222",
    ("slurm", "shared_dir"): "/shared/other",
    ("slurm", "workdir"): "/var/tmp",
}
# Fields that hold what the user wrote verbatim under another name (`max_duration` → max_duration_s):
# found by the diff below, listed nowhere.

# What may read a field without it counting as use: the config package itself, and the module that
# declares a provider's settings (its own parsing).
NOT_USE = {FLEET / "config"}


def uncommented(text: str) -> str:
    """The starter with its commented-out example lines made real (as the schema test does)."""
    return re.sub(r'^# (?=\[|"?[A-Za-z_][\w.-]*"? = )', "", text, flags=re.M)


def leaves(doc: dict[str, Any]) -> list[tuple]:
    """Every key path the starter writes: ("gpus",), ("budgets", "idle_minutes"), ("hosts", 0, "port")."""
    paths: list[tuple] = []
    for name, value in doc.items():
        if name in TOP_LEVEL or not isinstance(value, (dict, list)) or \
                (isinstance(value, list) and not all(isinstance(v, dict) for v in value)):
            paths.append((name,))
        elif isinstance(value, dict):
            paths += [(name, key) for key in value]
        else:
            paths += [(name, 0, key) for key in value[0]]
    return paths


def get(doc: dict, path: tuple) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def changed(value: Any, path: tuple) -> Any:
    if path in ALTERNATIVES:
        return ALTERNATIVES[path]
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str) and (duration := re.fullmatch(r"(\d+)([smhd])", value)):
        return f"{int(duration.group(1)) + 1}{duration.group(2)}"
    if isinstance(value, str):
        return value + "x" if not value.startswith(("~", "/")) else value + "/x"
    if isinstance(value, list):
        return value + ["EXTRA_NAME"]
    raise AssertionError(f"{path}: no alternative value; add one to ALTERNATIVES")


def flat(obj: Any, path: tuple = (), field: str = "") -> dict[tuple, tuple[Any, str]]:
    """The loaded model as leaf path → (value, the dataclass field that holds it)."""
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            if f.name not in ("raw", "path", "base_dir"):
                out.update(flat(getattr(obj, f.name), path + (f.name,), f.name))
        return out
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            out.update(flat(value, path + (key,), field))
        return out or {path: ({}, field)}
    if isinstance(obj, (list, tuple)) and any(dataclasses.is_dataclass(v) for v in obj):
        out = {}
        for index, value in enumerate(obj):
            out.update(flat(value, path + (index,), field))
        return out
    return {path: (obj, field)}


def load(directory: Path, doc_text: str):
    (directory / "fleet.toml").write_text(doc_text)
    return load_config(cwd=directory)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return str(value)


def with_value(text: str, path: tuple, value: Any) -> str:
    """`text` with the line that sets `path`'s key in its section replaced (comments kept)."""
    section = None if len(path) == 1 else path[0]
    key = path[-1]
    lines, current = text.splitlines(), None
    for n, line in enumerate(lines):
        header = re.match(r"^\[\[?([\w.-]+)\]\]?\s*$", line)
        if header:
            current = header.group(1)
            continue
        if current == section and re.match(rf'^"?{re.escape(str(key))}"? = ', line):
            lines[n] = f"{key} = {toml_value(value)}"
            return "\n".join(lines) + "\n"
    raise AssertionError(f"{path}: its line is not in the starter")


@pytest.fixture(scope="module")
def starter(tmp_path_factory) -> tuple[Path, str, dict]:
    directory = tmp_path_factory.mktemp("exp")
    text = uncommented(starter_text(directory))
    return directory, text, tomllib.loads(text)


@pytest.fixture(scope="module")
def reads() -> set[str]:
    """Attribute names fleet's code reads (x.name, getattr(x, "name")) outside the config package."""
    names: set[str] = set()
    for path in FLEET.rglob("*.py"):
        if any(path.is_relative_to(d) for d in NOT_USE) or path.name == "settings.py":
            continue
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                names.add(node.attr)
            elif isinstance(node, ast.Call) and len(node.args) > 1 and getattr(node.func, "id", "") == "getattr" \
                    and isinstance(node.args[1], ast.Constant):
                names.add(node.args[1].value)
            elif isinstance(node, ast.Call) and node.args and getattr(node.func, "attr", "") == "get" \
                    and isinstance(node.args[0], ast.Constant):             # settings handed on as a dict
                names.add(node.args[0].value)
            elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
                names.add(node.slice.value)
    return names


def starter_keys() -> list[tuple]:
    text = uncommented(starter_text(Path("/nonexistent/exp")))
    return leaves(tomllib.loads(text))


def test_the_starter_writes_keys_in_every_section_it_has():
    keys = starter_keys()
    sections = {k[0] for k in keys if len(k) > 1}
    assert {"lease", "budgets", "sweep", "queue", "env", "data", "prices", "aws", "hosts", "slurm"} <= sections
    assert len(keys) > 60


@pytest.mark.parametrize("path", starter_keys(), ids=lambda p: ".".join(map(str, p)))
def test_every_key_init_writes_reaches_the_model_and_is_read(path, starter, reads, tmp_path):
    directory, text, doc = starter
    before = flat(load(directory, text))
    alternative = changed(get(doc, path), path)
    after = flat(load(tmp_path, with_value(text, path, alternative)))
    diff = {p for p in set(before) | set(after) if before.get(p, (None,))[0] != after.get(p, (None,))[0]}
    assert diff, f"{'.'.join(map(str, path))} = {alternative!r} loads the same Config: nothing reads it"
    fields = {(before.get(p) or after.get(p))[1] for p in diff}
    unread = {f for f in fields if f not in reads}
    assert not unread, f"{'.'.join(map(str, path))} lands in {unread}, which no code outside fleet/config reads"


@pytest.mark.parametrize("path, expect", [
    (("gpus",), lambda q: q.gpus == 8 and q.machines == 2),
    (("template",), lambda q: q.template == "local-1gpu" and q.machines == 4),
    (("max_duration",), lambda q: q.max_duration_s == 7200),
    (("budget",), lambda q: q.budget == Decimal("26")),
    (("prices", "local-4gpu"), lambda q: q.price_per_hour == Decimal("1") and q.price_source == "fleet.toml [prices]"),
], ids=lambda p: ".".join(map(str, p)) if isinstance(p, tuple) else "")
def test_plan_keys_change_the_plan(path, expect, starter, tmp_path):
    """The keys that shape what is leased change the plan `fleet up --dry-run` prints."""
    from fleet.run.offer import quote
    directory, text, doc = starter
    value = {("prices", "local-4gpu"): 1}.get(path, changed(get(doc, path), path))
    base = quote(load(directory, text))
    other = quote(load(tmp_path, with_value(text, path, value)))
    assert not expect(base) and expect(other), (base, other)
