"""Fleet's state: leases, machines, runs (and, from later migrations, records, ledger, slots).

`open_state()` picks the store from FLEET_STATE_URL (postgresql://… for team mode) or defaults to
SQLite at $FLEET_HOME/state.db.
"""
from __future__ import annotations

import os

from .store import StateStore


def open_state(url: str | None = None) -> StateStore:
    url = url or os.environ.get("FLEET_STATE_URL") or ""
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresDatabase
        return StateStore(PostgresDatabase(url))
    from pathlib import Path

    from ..paths import fleet_home
    from .db import Database
    path = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else fleet_home() / "state.db"
    return StateStore(Database(path))


__all__ = ["StateStore", "open_state"]
