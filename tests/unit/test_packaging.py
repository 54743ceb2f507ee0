"""Every data file fleet reads at run time is declared as package data, so a wheel ships it."""
from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_non_python_file_in_the_package_is_package_data():
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    missing = []
    for path in (REPO / "fleet").rglob("*"):
        if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
            continue
        rel_parts = path.relative_to(REPO).parts
        covered = False
        for package, patterns in data.items():
            pkg_parts = tuple(package.split("."))
            if rel_parts[:len(pkg_parts)] == pkg_parts:
                inner = "/".join(rel_parts[len(pkg_parts):])
                covered |= any(fnmatch.fnmatch(inner, p) for p in patterns)
        if not covered:
            missing.append(str(path.relative_to(REPO)))
    assert not missing, f"not shipped in the wheel: {missing}"
