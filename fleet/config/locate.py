"""Which fleet.toml a command reads: ./fleet.toml, or the one named with -f."""
from __future__ import annotations

import errno
import os
from pathlib import Path

from ..errors import ConfigError

CONFIG_FILE = "fleet.toml"


def display_path(path: Path, cwd: Path) -> str:
    try:
        return str(path.relative_to(cwd))
    except ValueError:
        return str(path)


def find_file(path: str | Path | None, cwd: Path) -> Path | None:
    if path is None:
        candidate = cwd / CONFIG_FILE
        if candidate.is_file() or not os.path.lexists(candidate):
            return candidate if candidate.is_file() else None
        # There but unreadable as a file (a link to an unmounted team share, a link loop, a directory,
        # a FIFO) is not "no fleet.toml": `fleet up -- CMD`, `rerun` and `budget` went on without its
        # budgets and settings, as if the experiment had none.
        raise ConfigError(why_not_a_file(candidate), path=CONFIG_FILE,
                          hint="fix it, or remove it to run with the defaults")
    candidate = Path(path).expanduser()
    candidate = candidate if candidate.is_absolute() else cwd / candidate
    if candidate.is_dir():
        candidate = candidate / CONFIG_FILE
    if not candidate.is_file():
        # A FIFO or a device is refused, not read: a pipe's writer could hold `fleet up` forever.
        what = why_not_a_file(candidate) if os.path.lexists(candidate) else "no such file"
        raise ConfigError(what, path=display_path(candidate, cwd),
                          hint="`fleet init` creates a starter fleet.toml")
    return candidate


def why_not_a_file(candidate: Path) -> str:
    from ..regular_files import kind_of
    try:
        mode = candidate.stat().st_mode
    except OSError as exc:
        if not candidate.is_symlink():
            return exc.strerror or str(exc)
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop"
        return f"a symbolic link to {os.readlink(candidate)!r}, which cannot be read ({exc.strerror or exc})"
    if not candidate.is_symlink():
        return f"not a regular file ({kind_of(mode)})"
    return f"a symbolic link to {os.readlink(candidate)!r}, which is not a regular file ({kind_of(mode)})"


def find_config_file(path: str | Path | None = None, cwd: Path | None = None) -> Path | None:
    """The fleet.toml `load_config` would read (None: there is none in `cwd`); a named one that does
    not exist raises."""
    return find_file(path, (cwd or Path.cwd()).resolve())
