"""A state database an earlier fleet made keeps working after an upgrade.

Migrations 0003 (ledger) and 0004 (hosts) were edited after release; a database that applied their
first text never ran them again. Here the database is put in that shape (migrations up to 11, then
the tables as the earlier text made them) and opened by this fleet: migration 12 repairs it, and
what a user does next works and keeps every row."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from fleet.providers.ssh.hosts import Inventory
from fleet.state.db import Database
from fleet.state.postgres import PostgresDatabase
from tests.conftest import run_fleet

# hosts as 0004_team.sql made it before 56ae51d (no home/workdir) and before 8cd5a42 (port NOT NULL).
_OLD_HOSTS = ("CREATE TABLE hosts (name TEXT PRIMARY KEY, address TEXT NOT NULL, port INTEGER NOT NULL DEFAULT 22,"
              " login TEXT, key_path TEXT, host_key TEXT, gpus INTEGER, gpu_model TEXT,"
              " source TEXT NOT NULL DEFAULT 'cli', status TEXT NOT NULL DEFAULT 'unknown', status_detail TEXT,"
              " checked_at TEXT, added_at TEXT NOT NULL, added_by TEXT NOT NULL)")


def _old_shape(db) -> None:
    """The tables as a database from an earlier release has them."""
    with db.transaction():
        for table in ("ledger_rollup", "ledger_rollup_mark", "ledger_damaged"):
            db.execute(f"DROP TABLE {table}")
        db.execute("DROP TABLE hosts")
        db.execute(_OLD_HOSTS)
        if db.dialect == "postgresql":
            db.execute("ALTER TABLE ledger ALTER COLUMN duration_ms TYPE INTEGER,"
                       " ALTER COLUMN cost_micro TYPE INTEGER")
        db.execute("INSERT INTO hosts (name, address, added_at, added_by) VALUES ('old', '10.0.0.9', 'x', 'ann')")


def _config_host(name: str):
    return SimpleNamespace(name=name, address="10.0.0.5", port=22, user=None, key=None, gpus=2,
                           gpu_model=None, workdir=None)


@pytest.fixture(params=["sqlite", "postgresql"])
def opened(request, tmp_path):
    """(open(): this fleet opening the database as an earlier one left it)."""
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
        old, reopen = PostgresDatabase(url, auto_migrate=False), lambda: PostgresDatabase(url)
    else:
        path = tmp_path / "state.db"
        old, reopen = Database(path, auto_migrate=False), lambda: Database(path)
    old.migrate(upto=11)
    _old_shape(old)
    old.close()
    yield reopen


def test_an_earlier_database_is_repaired_and_keeps_its_rows(opened):
    db = opened()
    try:
        assert 12 in db.applied_migrations()
        # A [[hosts]] entry on the default port is stored as NULL: refused by the old NOT NULL.
        Inventory(db, [_config_host("gpu1")]).sync_config_hosts("ann")
        hosts = {r["name"]: r for r in db.execute("SELECT * FROM hosts")}
        assert hosts["gpu1"]["port"] is None
        assert hosts["old"]["port"] == 22 and hosts["old"]["added_by"] == "ann"
        assert "workdir" in hosts["old"] and hosts["old"]["workdir"] is None
        assert db.execute("SELECT * FROM ledger_rollup_mark") == []
        if db.dialect == "postgresql":   # a month-long row's duration fits
            types = {r["column_name"]: r["data_type"] for r in db.execute(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = 'ledger'")}
            assert {types[c] for c in ("duration_ms", "rate_micro", "cost_micro", "idle_gpu_s")} == {"bigint"}
    finally:
        db.close()


def test_fleet_report_on_an_earlier_sqlite_database(fleet_home, tmp_path):
    old = Database(fleet_home / "state.db", auto_migrate=False)
    old.migrate(upto=11)
    _old_shape(old)
    old.close()
    proc = run_fleet(["report"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "no such table" not in proc.stderr and "no ledger entries" in proc.stdout
