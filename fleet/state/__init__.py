"""Fleet's state: leases, machines, runs (and, from later migrations, records, ledger, slots).

`open_state()` picks the store, first match wins: the `url` argument, FLEET_STATE_URL, `state_url`
in ./fleet.toml (so every command run in a team's repository shares its database), else SQLite at
$FLEET_HOME/state.db. postgresql://… is team mode; sqlite:///path names another SQLite file.
"""
from __future__ import annotations

import os
from pathlib import Path

from .store import StateStore


def configured_state_url(directory: Path | None = None) -> str:
    """`state_url` from ./fleet.toml (unvalidated), so every command in a team's repository shares it."""
    from ..config.peek import peek_str
    return peek_str("state_url", directory)


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
