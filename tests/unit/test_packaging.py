"""Every data file fleet reads at run time is declared as package data, so a wheel ships it."""
from __future__ import annotations

import fnmatch
import os
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_non_python_file_in_the_package_is_package_data():
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    missing = []
    # followlinks: fleet/stacks and fleet/images/recipes are symlinks to stacks/ and images/
    paths = [Path(d, f) for d, _, files in os.walk(REPO / "fleet", followlinks=True) for f in files]
    for path in paths:
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


def test_the_package_reaches_the_top_level_program_and_recipes_through_links():
    """One copy of each: the wheel ships stacks/ and images/ via links inside the package, while
    Pulumi.yaml (main: stacks/) and the docs keep them at the top of the repository."""
    assert (REPO / "fleet" / "stacks").resolve() == (REPO / "stacks").resolve()
    assert (REPO / "fleet" / "images" / "recipes").resolve() == (REPO / "images").resolve()
    assert (REPO / "fleet" / "py.typed").is_file()


def test_the_distribution_name_is_the_one_the_docs_and_hints_use():
    from fleet.distribution import NAME
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["name"] == NAME != "fleet"
    texts = [p.read_text() for p in [REPO / "README.md", *(REPO / "docs").glob("*.md")]]
    texts += [p.read_text() for p in (REPO / "fleet").rglob("*.py")]
    stale = [line for text in texts for line in text.splitlines() if "install 'fleet[" in line
             or "install fleet[" in line or 'install "fleet[' in line]
    assert stale == []
