"""What a failed SQLite call means to a user: damage (corrupt_database, one line saying what to do),
something that passes (a lock, a full disk: StateUnavailable), or a schema that is not fleet's."""
from __future__ import annotations

import sqlite3
from pathlib import Path

from ..errors import EnvironmentProblem


def _is_corrupt(exc: sqlite3.Error) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith("SQLITE_CORRUPT") or name == "SQLITE_NOTADB" or \
        any(text in str(exc) for text in ("disk image is malformed", "file is not a database"))


_BUSY, _LOCKED, _FULL = 5, 6, 13     # SQLite's primary result codes (the low byte of an extended one)


def transient_hint(exc: sqlite3.Error) -> str | None:
    """What to do about a failure that passes by itself (a lock another process holds, a full disk),
    or None for any other: only these may blame a lock or the disk, and only these are waited out."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(exc)
    if primary in (_BUSY, _LOCKED) or primary is None and "is locked" in text:
        return "another fleet command holds it locked; try again"
    if _is_full(exc):
        return "the disk is full: free some space"
    return None


def _is_full(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF == _FULL if isinstance(code, int) else "disk is full" in str(exc)


def space_left(path: Path, exc: sqlite3.Error) -> str:
    """For a full disk, how much room the filesystem holding the database has left and where it is
    mounted: "database or disk is full" named neither, so a user freed space on the wrong disk (their
    home, while FLEET_HOME sat on a small /var). Empty for any other failure."""
    if not _is_full(exc):
        return ""
    import os
    from ..render.units import human_size
    where = os.path.abspath(path.parent)
    try:
        st = os.statvfs(where)
        while not os.path.ismount(where):
            where = os.path.dirname(where)
    except OSError:
        return ""
    return f"; {human_size(st.f_bavail * st.f_frsize)} free on {where}, the filesystem that holds it"


def mismatch_hint(exc: sqlite3.Error) -> str | None:
    """A table or column fleet's SQL names is not there: the file was changed by hand or by a fleet
    that does not share this one's schema."""
    if any(text in str(exc) for text in ("no such table", "no such column", "has no column named")):
        return "its tables are not the ones this fleet expects (changed by hand, or by another fleet version)"
    return None


def _shown(path: Path) -> str:
    home = Path.home()
    try:
        return "~/" + str(path.resolve().relative_to(home.resolve()))
    except (ValueError, OSError, RuntimeError):
        return str(path)


def corrupt_database(path: Path, exc: sqlite3.Error | str) -> EnvironmentProblem:
    """A damaged page (disk fault, a crash mid-write on a filesystem that lies about fsync, a copy
    taken while written): nothing fleet can repair in place, so say which file and what to do."""
    shown = _shown(path)
    return EnvironmentProblem(
        f"state database {shown} is corrupt: {exc}",
        hint=f"move it aside with `mv {shown} {shown}.corrupt` and run the command again: fleet starts "
             "an empty one (move records.tip beside it aside too, or the next run keeps it and says why); "
             "machines it recorded still end at their own deadlines")


def empty_but_used(path: Path) -> bool:
    """A zero-byte state.db in a FLEET_HOME that fleet has used (a truncation, a copy that failed):
    opened as a fresh database it would show no leases and no ledger while machines and spend it
    recorded are still out there."""
    if not _empty(path) or not _used(path.parent):
        return False
    # Another fleet process may be creating it this moment (two first `fleet up`s at once): SQLite
    # writes its header within milliseconds of creating the file. An emptied one stays empty.
    import time
    deadline = time.monotonic() + CREATING_S
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if not _empty(path):
            return False
    return True


CREATING_S = 2.0


def _empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def _used(home: Path) -> bool:
    if (home / "records.tip").exists():
        return True
    for name in ("store", "leases", "machines"):
        try:
            if any((home / name).iterdir()):
                return True
        except OSError:
            continue
    return False
