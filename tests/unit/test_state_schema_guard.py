"""A state database fleet cannot trust as it is: a schema from a newer fleet, tables changed by hand,
an emptied file. Each is one line that names it (exit 3), never used silently, and the lock/disk hint
only where the database said it was locked or full."""
from __future__ import annotations

import sqlite3

import pytest

from fleet.errors import EnvironmentProblem, StateUnavailable
from fleet.state.db import Database, migrations
from tests.conftest import run_fleet

NEWEST = max(n for n, _, _ in migrations())


def _errors(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("fleet: error:")]


@pytest.mark.parametrize("args", [["status"], ["report"]])
def test_a_schema_from_a_newer_fleet_is_refused_not_used(fleet_home, tmp_path, args):
    path = fleet_home / "state.db"
    Database(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (?, 'future', 'x')", (NEWEST + 1,))
    proc = run_fleet(args, cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    errors = _errors(proc)
    assert len(errors) == 1, proc.stderr
    assert f"state database {path} has schema {NEWEST + 1}, newer than this fleet knows ({NEWEST})" in errors[0]
    assert "pip install -U fleet-gpu" in errors[0] and "locked" not in errors[0]


def test_a_missing_column_does_not_blame_a_lock_or_the_disk(fleet_home, tmp_path):
    path = fleet_home / "state.db"
    Database(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE leases RENAME COLUMN status TO state")
    proc = run_fleet(["status"], cwd=tmp_path)
    errors = _errors(proc)
    assert proc.returncode == 3 and len(errors) == 1, proc.stderr
    assert "no such column" in errors[0] and "status" in errors[0], errors
    assert "locked" not in errors[0] and "disk" not in errors[0], errors
    assert "not the ones this fleet expects" in errors[0], errors


def test_a_lock_held_elsewhere_says_so_and_passes(tmp_path):
    db = Database(tmp_path / "state.db")
    holder = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with db.patience(0.2):
            with pytest.raises(StateUnavailable, match=r"database is locked \(another fleet command holds it "
                                                       r"locked; try again\)"):
                with db.transaction():
                    pass
            with pytest.raises(StateUnavailable, match="holds it locked"):
                db.execute("CREATE TABLE scratch (a INTEGER)")   # a write: WAL lets reads through
    finally:
        holder.execute("COMMIT")
        holder.close()
    db.execute("CREATE TABLE scratch (a INTEGER)")
    db.close()


def test_patience_is_restored_after_the_block(tmp_path):
    db = Database(tmp_path / "state.db")
    with db.patience(0.5):
        assert db.execute("PRAGMA busy_timeout")[0]["timeout"] == 500
    assert db.execute("PRAGMA busy_timeout")[0]["timeout"] == 30000
    db.close()


@pytest.mark.parametrize("used_by", ["records.tip", "store", "machines", "leases"])
def test_an_emptied_state_database_where_fleet_was_used_is_corrupt(fleet_home, tmp_path, used_by):
    path = fleet_home / "state.db"
    Database(path).close()
    for side in ("-wal", "-shm"):
        (fleet_home / f"state.db{side}").unlink(missing_ok=True)
    if used_by == "records.tip":
        (fleet_home / used_by).write_text("tip\n")
    else:
        (fleet_home / used_by / "something").mkdir(parents=True)
    path.write_bytes(b"")
    for args in (["status"], ["report"]):
        proc = run_fleet(args, cwd=tmp_path)
        errors = _errors(proc)
        assert proc.returncode == 3 and len(errors) == 1, proc.stderr
        assert f"state database {path} is corrupt: the file is empty" in errors[0], errors
        assert f"mv {path} {path}.corrupt" in errors[0], errors
    assert path.stat().st_size == 0   # left as it was found, for whoever looks into it


def test_an_empty_state_database_in_an_unused_home_is_a_fresh_one(fleet_home):
    path = fleet_home / "state.db"
    path.write_bytes(b"")
    db = Database(path)
    assert db.execute("SELECT COUNT(*) AS n FROM leases") == [{"n": 0}]
    db.close()


def test_a_newer_schema_is_refused_by_the_library_too(tmp_path):
    path = tmp_path / "state.db"
    Database(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (?, 'future', 'x')", (NEWEST + 1,))
    with pytest.raises(EnvironmentProblem, match="newer than this fleet knows"):
        Database(path)


def test_a_state_database_another_fleet_is_creating_is_not_corrupt(fleet_home):
    """Two first `fleet up`s at once: one found the file the other had just created, still empty
    (SQLite writes its header a moment later), and refused it as an emptied database (seen in CI)."""
    import sqlite3
    import threading
    path = fleet_home / "state.db"
    (fleet_home / "store" / "chunks").mkdir(parents=True)          # the other run got that far
    path.write_bytes(b"")

    def create():
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.close()
    threading.Timer(0.3, create).start()
    db = Database(path)
    assert db.execute("SELECT COUNT(*) AS n FROM leases") == [{"n": 0}]
    db.close()
