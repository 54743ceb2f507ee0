"""docs/architecture.md's package map names every top-level module and package of fleet/ and every
module of fleet/run/, and names no module that does not exist: a new contributor reads it first."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "architecture.md").read_text()
MAP = DOC.split("## Packages", 1)[1].split("```", 2)[1]


def test_every_top_level_module_and_package_is_in_the_map():
    named = set(re.findall(r"\b([a-z_0-9]+(?:\.py|/))", MAP))
    missing = [p.name + ("/" if p.is_dir() else "") for p in sorted((REPO / "fleet").iterdir())
               if not p.name.startswith("_") and (p.suffix == ".py" or (p / "__init__.py").exists())
               and p.name + ("/" if p.is_dir() else "") not in named]
    assert not missing, f"docs/architecture.md's map does not name {missing}"


def test_every_module_of_fleet_run_is_in_its_table():
    listed = set(re.findall(r"`([a-z_0-9]+\.py)`", DOC.split("`fleet/run/` in detail", 1)[1].split("\n## ", 1)[0]))
    modules = {p.name for p in (REPO / "fleet" / "run").glob("*.py") if p.name != "__init__.py"}
    assert not modules - listed, f"fleet/run/ modules missing from the table: {sorted(modules - listed)}"
    assert not listed - modules, f"the table names no such module: {sorted(listed - modules)}"


def test_the_map_names_no_module_that_does_not_exist():
    existing = {p.name for top in ("fleet", "tests") for p in (REPO / top).rglob("*.py")}
    ghosts = sorted(set(re.findall(r"\b([a-z_0-9]+\.py)\b", MAP)) - existing)
    assert not ghosts, f"docs/architecture.md's map names modules that do not exist: {ghosts}"
