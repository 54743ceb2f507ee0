"""Where fleet keeps its files: everything lives under $FLEET_HOME (default ~/.fleet).

FLEET_HOME holds lease keys, machine host keys, the state database and the record anchor, so it is
created 0700, and every directory fleet makes in it is 0700 too. An existing FLEET_HOME that other
users can write is checked once per process: writable by every user (mode o+w, sticky or not) is
refused, since anyone could then swap fleet's keys, state or records; writable by the group is used,
with one warning line, since a team may share a group on purpose.
"""
from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

from .errors import EnvironmentProblem


_verified: set[Path] = set()   # homes this process has already proved writable and private enough


def fleet_home(create: bool = True) -> Path:
    try:
        home = Path(os.environ.get("FLEET_HOME") or Path.home() / ".fleet").expanduser().absolute()
    except RuntimeError:      # ~user of no user, or no HOME and no passwd entry (some containers)
        home = None
    if home is None:
        raise EnvironmentProblem("FLEET_HOME cannot be found: its ~ names no known home directory",
                                 hint="set FLEET_HOME to a full path, or set HOME")
    if any(c == '"' or ord(c) < 32 or ord(c) == 127 for c in str(home)):
        # Written into each local machine's sshd_config, which can quote spaces, never these.
        raise EnvironmentProblem(f"FLEET_HOME {str(home)!r} contains a quote or a control character",
                                 hint="set FLEET_HOME to a plain path")
    if create:
        try:
            home.mkdir(parents=True, exist_ok=True, mode=0o700)
            if home not in _verified:   # the write probe once per process: status calls this per lease
                _check_mode(home)
                probe = home / f".write-probe-{os.getpid()}-{threading.get_ident()}"   # concurrent fleets each probe their own
                probe.write_text("")
                probe.unlink()
                _verified.add(home)
        except OSError as exc:
            raise EnvironmentProblem(
                f"FLEET_HOME {home} is not writable: {exc.strerror or exc}",
                hint="set FLEET_HOME to a writable directory",
            ) from None
    return home


def _check_mode(home: Path) -> None:
    mode = stat.S_IMODE(os.stat(home).st_mode)
    if mode & stat.S_IWOTH:
        raise EnvironmentProblem(
            f"FLEET_HOME {home} is writable by every user (mode {mode:04o}): anyone could replace fleet's "
            "keys, state and run records", hint=f"chmod 700 {home}, or set FLEET_HOME to a private directory")
    if mode & stat.S_IWGRP:
        from .warn_sink import warn
        warn(f"FLEET_HOME {home} is writable by its group (mode {mode:04o}): group members can "
             f"change fleet's keys, state and run records; `chmod 700 {home}` if that is not intended")


def plain_name(value: object, what: str) -> str:
    """An id read back from the state (which a team may share: every teammate can write its rows)
    about to become a file name under FLEET_HOME: a plain name, never a path. A planted lease id
    `../../x` would otherwise make a release delete, or write, outside FLEET_HOME."""
    if not (isinstance(value, str) and 0 < len(value) <= 200 and value[0] != "."
            and all(c.isalnum() or c in "._-" for c in value)):
        from .errors import UsageError
        raise UsageError(f"{what} {value!r} is not a plain name: not used as a path under FLEET_HOME",
                         hint="was the state database edited by hand or by someone else?")
    return value


def subdir(name: str) -> Path:
    path = fleet_home() / name
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path
