"""The CLI is thin: fleet/cli parses, calls the public library, renders. Checked on the source, so a
command that starts deciding things (or reaching into the library's private parts) fails here."""
from __future__ import annotations

import ast
from pathlib import Path

FLEET = Path(__file__).resolve().parents[2] / "fleet"
CLI = FLEET / "cli"
MAX_CLI_MODULE_LINES = 300
# Written alongside this rule by other work in progress; listed so the rule holds for everything
# else, and enforced both ways: a module that stops importing private names must leave the list.
PRIVATE_IMPORTS_YET: set[str] = set()


def private_imports(path: Path) -> list[str]:
    """Names starting with _ imported from fleet modules outside fleet/cli."""
    found = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level >= 2 or (
                isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("fleet.")
                and not (node.module or "").startswith("fleet.cli")):
            found += [f"{node.module}.{a.name}" for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]
    return found


def test_cli_modules_use_only_the_librarys_public_names():
    offenders = {p.name: private_imports(p) for p in CLI.glob("*.py") if private_imports(p)}
    assert set(offenders) - PRIVATE_IMPORTS_YET == set(), offenders
    stale = {m for m in PRIVATE_IMPORTS_YET if (CLI / m).exists() and m not in offenders}
    assert stale == set(), "these import only public names now: take them off PRIVATE_IMPORTS_YET"


def test_cli_modules_stay_small():
    sizes = {p.name: len(p.read_text("utf-8").splitlines()) for p in CLI.glob("*.py")}
    assert {n: s for n, s in sizes.items() if s > MAX_CLI_MODULE_LINES} == {}


def test_the_library_never_imports_the_cli():
    """fleet/cli is the top layer: what a command needs from elsewhere is in the library, never the reverse.
    fleet/__main__.py is no library module: it is `python -m fleet`, the command itself."""
    offenders = []
    for path in FLEET.rglob("*.py"):
        if path.is_relative_to(CLI) or path == FLEET / "__main__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom):
                depth = len(path.relative_to(FLEET).parts) - 1           # packages between fleet/ and the file
                absolute = (node.module or "") if node.level == 0 else None
                relative_root = node.level == depth + 1 and (node.module or "").split(".")[0] == "cli"
                if relative_root or (absolute or "").startswith("fleet.cli"):
                    offenders.append(str(path.relative_to(FLEET)))
    assert offenders == []
