"""Fleet's state: leases, machines, runs (and, from later migrations, records, ledger, slots).

`open_state()` picks the store, first match wins: the `url` argument, FLEET_STATE_URL, `state_url`
in ./fleet.toml (so every command run in a team's repository shares its database), else SQLite at
$FLEET_HOME/state.db. postgresql://… is team mode; sqlite:///path names another SQLite file.
"""
from __future__ import annotations

import os
from pathlib import Path

from .store import StateStore


_WARNED: set[str] = set()   # once per process and file, however often the state is opened


def configured_state_url(directory: Path | None = None) -> str:
    """`state_url` from ./fleet.toml (unvalidated), so every command in a team's repository shares it.
    A fleet.toml that is there but cannot be read (a link to an unmounted team share, a syntax error
    mid-edit) is said on stderr: the commands that only peek go on with this computer's state, which
    may not be the team's, so `fleet status` showing "no live leases" is never silently wrong."""
    from ..config.peek import peek_why
    value, why = peek_why("state_url", directory)
    where = str(directory / "fleet.toml") if directory is not None else "./fleet.toml"
    if why is not None and where not in _WARNED:
        from ..warn_sink import warn
        _WARNED.add(where)
        warn(f"{where}: {why}: any state_url it sets is ignored, so this is FLEET_HOME's state, maybe not "
             "your team's")
    return value if isinstance(value, str) else ""


def check_state_url(url: str) -> None:
    """UsageError (one line) for a state URL fleet cannot open: neither postgresql:// nor sqlite:///."""
    if url and not url.startswith(("postgresql://", "postgres://", "sqlite:///")):
        from ..errors import UsageError
        # Never any of the rest: "user:password@host/db" without its scheme is still a password.
        scheme = url.split("://", 1)[0] if "://" in url else ""
        named = f"{scheme!r}… " if scheme.isalnum() and len(scheme) <= 20 else "without a known scheme "
        raise UsageError(f"state database URL {named}is not supported",
                         hint="use postgresql://user@host/db or sqlite:///path/to/state.db")


def open_state(url: str | None = None) -> StateStore:
    if url is not None and not isinstance(url, str):
        from ..errors import UsageError
        raise UsageError(f"url must be a state database URL (str) or None, got {type(url).__name__}",
                         hint="fleet.open_state('sqlite:///path/to/state.db'), or no argument for the configured one")
    url = url or os.environ.get("FLEET_STATE_URL") or configured_state_url() or ""
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresDatabase
        return StateStore(PostgresDatabase(url))
    check_state_url(url)
    from ..paths import fleet_home
    from .db import Database
    path = Path(url.removeprefix("sqlite:///")) if url else fleet_home() / "state.db"
    return StateStore(Database(path))


__all__ = ["StateStore", "open_state", "configured_state_url"]
