"""Read one top-level key of ./fleet.toml without validating the rest.

Commands like `fleet status` need the team's database and the configured user even where the
file is incomplete for `fleet up`; a broken file is left for the commands that load it properly.
"""
from __future__ import annotations

from pathlib import Path
TYPE_CHECKING = False   # see fleet/__init__.py: on the path of every `fleet status`
if TYPE_CHECKING:
    from typing import Any


def peek(key: str, directory: Path | None = None) -> Any:
    path = (directory or Path.cwd()) / "fleet.toml"
    try:
        with open(path, "rb") as fh:
            import tomllib   # only once there is a file: tomllib imports typing (~10 ms)
            return tomllib.load(fh).get(key)
    except (OSError, ValueError, ImportError):
        return None


def peek_str(key: str, directory: Path | None = None) -> str:
    value = peek(key, directory)
    return value if isinstance(value, str) else ""
