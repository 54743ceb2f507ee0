"""The state database on a real PostgreSQL server and on SQLite: one interface, same schema."""
from __future__ import annotations

import json
import os
import threading
import time
from datetime import timedelta

import pytest

from fleet.errors import EnvironmentProblem
from fleet.models import Lease, Machine, utcnow
from fleet.state import StateStore, open_state
from fleet.state.db import ConstraintViolation, Database, migrations
from fleet.state.postgres import IDLE_PING_S, PostgresDatabase, redact_url, to_pyformat

ALL = [n for n, _, _ in migrations()]


@pytest.fixture(params=["sqlite", "postgresql"])
def make_db(request, tmp_path, monkeypatch):
    """A factory for databases of one dialect; every one made is closed at the end."""
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    made = []
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
        factory = lambda **kw: PostgresDatabase(url, **kw)   # noqa: E731
    else:
        factory = lambda **kw: Database(tmp_path / "state.db", **kw)   # noqa: E731

    def make(**kw):
        db = factory(**kw)
        made.append(db)
        return db
    yield make
    for db in made:
        db.close()


def columns(db, table: str) -> set[str]:
    if db.dialect == "sqlite":
        return {r["name"] for r in db.execute(f"PRAGMA table_info({table})")}
    return {r["column_name"] for r in db.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?", (table,))}


def test_placeholders_become_pyformat_outside_quotes():
    assert to_pyformat("SELECT * FROM t WHERE a = ? AND b LIKE ?") == "SELECT * FROM t WHERE a = %s AND b LIKE %s"
    assert to_pyformat("SELECT '?', \"odd?\" FROM t WHERE a = ?") == "SELECT '?', \"odd?\" FROM t WHERE a = %s"
    assert to_pyformat("SELECT 'x%' WHERE a = ?") == "SELECT 'x%%' WHERE a = %s"


def test_password_is_redacted_from_urls():
    assert redact_url("postgresql://alice:s3cret@db.example/fleet") == "postgresql://alice:***@db.example/fleet"
    assert "s3cret" not in redact_url("postgresql:///fleet?host=/tmp/x&password=s3cret")


def test_migrates_from_empty_database(make_db):
    db = make_db()
    assert {r["version"] for r in db.execute("SELECT version FROM schema_migrations")} == set(ALL)
    for table in ("leases", "machines", "runs", "hosts", "gpu_slots", "users"):
        assert columns(db, table), table
    assert db.migrate() == []          # idempotent: nothing left to apply


def test_migrates_from_previous_schema_keeping_rows(make_db):
    old = make_db(auto_migrate=False)
    assert old.migrate(upto=3) == [n for n in ALL if n <= 3]
    assert not {4} & {r["version"] for r in old.execute("SELECT version FROM schema_migrations")}
    now = utcnow().isoformat()
    old.execute("INSERT INTO leases (id, provider, template, project, owner, status, created_at, deadline,"
                " max_deadline, heartbeat_ttl_s) VALUES (?,?,?,?,?,?,?,?,?,?)",
                ("l-old", "local", "local-4gpu", "p", "alice", "active", now, now, now, 300))
    old.close()
    new = make_db()                    # opening with current code applies what is missing
    assert {r["version"] for r in new.execute("SELECT version FROM schema_migrations")} == set(ALL)
    assert new.execute("SELECT owner FROM leases WHERE id = ?", ("l-old",)) == [{"owner": "alice"}]
    assert "added_by" in columns(new, "hosts")


def test_same_schema_on_both_databases(tmp_path, postgres_url):
    lite, pg = Database(tmp_path / "s.db"), PostgresDatabase(postgres_url)
    try:
        tables = [r["name"] for r in lite.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        assert "gpu_slots" in tables
        for table in tables:
            assert columns(lite, table) == columns(pg, table), table
    finally:
        lite.close()
        pg.close()


def test_concurrent_first_opens_migrate_once(postgres_url):
    errors, dbs = [], []

    def open_one():
        try:
            dbs.append(PostgresDatabase(postgres_url))
        except Exception as exc:   # noqa: BLE001 — the assertion below reports it
            errors.append(exc)
    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        rows = dbs[0].execute("SELECT version, COUNT(*) AS n FROM schema_migrations GROUP BY version")
        assert sorted(r["version"] for r in rows) == ALL and all(r["n"] == 1 for r in rows)
    finally:
        for db in dbs:
            db.close()


def test_state_store_round_trip(make_db):
    store = StateStore(make_db())
    now = utcnow()
    machine = Machine(id="m-1", lease_id="lease-abc", node_rank=0, host="127.0.0.1", port=2222, user="u",
                      key_path="/k", host_key="ssh-ed25519 AAAA", workdir="/w", gpu_slots=(2, 3))
    store.save_lease(Lease(id="lease-abc", provider="ssh", template="t", machines=[machine], created_at=now,
                           deadline=now + timedelta(hours=1), max_deadline=now + timedelta(hours=4),
                           user="bob", meta={"note": "100%"}))
    got = store.get_lease("lease-a")                       # unique prefix
    assert got.machines[0].gpu_slots == (2, 3) and got.user == "bob" and got.meta == {"note": "100%"}
    store.set_lease_deadline("lease-abc", now + timedelta(hours=2))          # keep_until NULL stays NULL
    assert store.get_lease("lease-abc").keep_until is None
    assert [lease.id for lease in store.list_leases(user="bob")] == ["lease-abc"]
    assert store.list_leases(user="carol") == []
    store.create_run("run-1", lease_id="lease-abc", project="p", user="bob", command="python t.py",
                     log_path="/l", output_dir="/o")
    store.finish_run("run-1", "succeeded", 0, {"gpus": 2})
    meta = store.get_run("run-1")["meta"]
    assert meta.pop("controller")["pid"] == os.getpid()     # who supervises the run (fleet/lost_runs.py)
    assert meta == {"gpus": 2}
    store.set_lease_status("lease-abc", "released")
    assert store.list_leases() == []


def test_transaction_rolls_back_on_error(make_db):
    db = make_db()
    with pytest.raises(ValueError):
        with db.transaction():
            db.execute("INSERT INTO users (name, first_seen_at, last_seen_at) VALUES (?, ?, ?)", ("a", "t", "t"))
            raise ValueError("boom")
    assert db.execute("SELECT name FROM users") == []


def test_a_slot_can_be_held_by_one_active_reservation_only(make_db):
    db = make_db()
    insert = ("INSERT INTO gpu_slots (host, slot, lease_id, machine_id, owner, reserved_at)"
              " VALUES (?, ?, ?, ?, ?, ?)")
    db.execute(insert, ("h1", 0, "l1", "m1", "alice", "t"))
    db.execute(insert, ("h2", 0, "l1", "m1", "alice", "t"))       # same slot index, other host: fine
    with pytest.raises(ConstraintViolation):
        db.execute(insert, ("h1", 0, "l2", "m2", "bob", "t"))
    db.execute("UPDATE gpu_slots SET released_at = ? WHERE lease_id = ?", ("t2", "l1"))
    db.execute(insert, ("h1", 0, "l2", "m2", "bob", "t"))         # free again after release
    assert len(db.execute("SELECT id FROM gpu_slots WHERE host = ?", ("h1",))) == 2


def test_executemany_and_upsert(make_db):
    db = make_db()
    db.executemany("INSERT INTO users (name, first_seen_at, last_seen_at) VALUES (?, ?, ?)",
                   [("a", "1", "1"), ("b", "1", "1")])
    db.execute("INSERT INTO users (name, first_seen_at, last_seen_at) VALUES (?, ?, ?) "
               "ON CONFLICT (name) DO UPDATE SET last_seen_at = excluded.last_seen_at", ("a", "2", "2"))
    assert db.execute("SELECT name, first_seen_at, last_seen_at FROM users ORDER BY name") == [
        {"name": "a", "first_seen_at": "1", "last_seen_at": "2"},
        {"name": "b", "first_seen_at": "1", "last_seen_at": "1"}]


def test_lock_rows_blocks_a_second_writer_until_commit(postgres_url):
    db = PostgresDatabase(postgres_url)
    try:
        db.execute("INSERT INTO hosts (name, address, added_at, added_by) VALUES (?, ?, ?, ?)",
                   ("h1", "127.0.0.1", "t", "a"))
        holding, order = threading.Event(), []

        def second():
            holding.wait(10)
            with db.transaction():
                db.lock_rows("SELECT name FROM hosts WHERE name = ?", ("h1",))
                order.append("second")
        t = threading.Thread(target=second)
        t.start()
        with db.transaction():
            db.lock_rows("SELECT name FROM hosts WHERE name = ?", ("h1",))
            holding.set()
            time.sleep(0.5)            # the other thread is now waiting on the row lock
            order.append("first")
        t.join(10)
        assert order == ["first", "second"]
        with pytest.raises(RuntimeError):
            db.lock_rows("SELECT name FROM hosts")   # outside a transaction it would lock nothing
    finally:
        db.close()


def test_open_state_uses_postgres_from_env(postgres_url, monkeypatch, tmp_path):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path))
    monkeypatch.setenv("FLEET_STATE_URL", postgres_url)
    store = open_state()
    try:
        assert store.db.dialect == "postgresql"
        assert not (tmp_path / "state.db").exists()
    finally:
        store.close()


def test_unreachable_server_is_one_line_environment_error(tmp_path):
    with pytest.raises(EnvironmentProblem) as info:
        PostgresDatabase(f"postgresql://fleet:hunter2@/nodb?host={tmp_path}", connect_timeout=2)
    assert "hunter2" not in str(info.value) and "\n" not in str(info.value)
    assert "cannot connect to state database" in str(info.value)


def test_a_password_the_driver_quotes_back_is_not_in_the_message(tmp_path):
    """libpq quotes a URL part it cannot parse, here the password with a bad %-escape."""
    with pytest.raises(EnvironmentProblem) as info:
        PostgresDatabase("postgresql://u:s3cr%zzet@127.0.0.1:1/db", connect_timeout=2)
    assert "s3cr" not in str(info.value) and "zzet" not in str(info.value), str(info.value)
    for url in ("postgresql://u@127.0.0.1:1/db?password=s3cr%zzet", "postgresql://u:p@ss%zzet@127.0.0.1:1/db"):
        with pytest.raises(EnvironmentProblem) as info:
            PostgresDatabase(url, connect_timeout=2)
        assert "zzet" not in str(info.value) and "cannot connect" in str(info.value), str(info.value)


def test_status_shows_own_leases_and_all_users_shows_the_team(postgres_url, tmp_path):
    from tests.conftest import run_fleet
    store = open_state(postgres_url)
    now = utcnow()
    try:
        for lease_id, user in (("l-alice", "alice"), ("l-bob", "bob")):
            store.save_lease(Lease(id=lease_id, provider="ssh", template="hosts", machines=[], created_at=now,
                                   deadline=now + timedelta(hours=1), max_deadline=now + timedelta(hours=2),
                                   user=user))
    finally:
        store.close()
    env = {"FLEET_HOME": str(tmp_path / "home"), "FLEET_STATE_URL": postgres_url, "FLEET_USER": "alice"}
    own = json.loads(run_fleet(["status", "--json", "--fast"], cwd=tmp_path, env=env).stdout)["leases"]
    team = json.loads(run_fleet(["status", "--json", "--fast", "--all-users"], cwd=tmp_path, env=env).stdout)["leases"]
    assert [(v["id"], v["user"]) for v in own] == [("l-alice", "alice")]
    assert sorted((v["id"], v["user"]) for v in team) == [("l-alice", "alice"), ("l-bob", "bob")]
    assert not (tmp_path / "home" / "state.db").exists()      # nothing went to a private SQLite file


def test_connections_of_finished_threads_are_closed(postgres_url):
    db = PostgresDatabase(postgres_url)
    try:
        def touch():
            db.execute("SELECT 1 AS one")
        for _ in range(30):                      # 30 short-lived worker threads, one after another
            t = threading.Thread(target=touch)
            t.start()
            t.join()
        db.execute("SELECT 1 AS one")

        def live() -> int:
            return db.execute("SELECT COUNT(*) AS n FROM pg_stat_activity WHERE datname = current_database()"
                              " AND application_name = 'fleet'")[0]["n"]
        # A closed connection's backend leaves pg_stat_activity a moment after the client hangs up
        # (later still with the cores busy); a leaked one never does.
        deadline = time.monotonic() + 30
        while live() > 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert live() <= 2
    finally:
        db.close()


def _end_backends(server: dict, url: str) -> int:
    """What `pg_ctl restart` or an administrator does to fleet's connections: ends them server-side."""
    import psycopg
    name = url.split("/")[3].split("?")[0]
    with psycopg.connect(server["admin_url"], autocommit=True) as admin:
        return len(admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE datname = %s AND pid <> pg_backend_pid()", (name,)).fetchall())


def test_statements_after_the_server_ended_the_connection_go_to_a_fresh_one(postgres_server, postgres_url):
    """Red-team finding: psycopg notices a connection the server ended only by using it, so the first
    statement after a server restart failed ("terminating connection due to administrator
    command") and took the run with it."""
    db = PostgresDatabase(postgres_url)
    try:
        db.execute("CREATE TABLE t (x INTEGER)")
        for what in ("execute", "transaction", "rows", "executemany"):
            assert _end_backends(postgres_server, postgres_url) == 1
            time.sleep(IDLE_PING_S + 0.2)     # a restart takes its time: the connection has been idle
            if what == "execute":
                db.execute("INSERT INTO t (x) VALUES (?)", (1,))
            elif what == "transaction":
                with db.transaction():
                    db.execute("INSERT INTO t (x) VALUES (?)", (2,))
            elif what == "rows":
                assert db.rows("SELECT COUNT(*) FROM t") == [(2,)]
            else:
                db.executemany("INSERT INTO t (x) VALUES (?)", [(3,), (4,)])
        assert [r["x"] for r in db.execute("SELECT x FROM t ORDER BY x")] == [1, 2, 3, 4]
    finally:
        db.close()


def test_a_connection_lost_inside_a_transaction_is_not_retried_and_says_it_passes(postgres_server,
                                                                                   postgres_url):
    from fleet.errors import StateUnavailable
    db = PostgresDatabase(postgres_url)
    try:
        db.execute("CREATE TABLE t (x INTEGER)")
        with pytest.raises(StateUnavailable, match="terminating connection|server closed|connection"):
            with db.transaction():
                db.execute("INSERT INTO t (x) VALUES (?)", (1,))
                _end_backends(postgres_server, postgres_url)
                db.execute("INSERT INTO t (x) VALUES (?)", (2,))
        assert db.execute("SELECT x FROM t") == []   # neither row: the transaction went whole
    finally:
        db.close()


def test_a_write_whose_connection_died_under_it_is_not_sent_twice(postgres_url, monkeypatch):
    """A connection cut after a write's commit reached the server, before its answer came back,
    looks like any lost connection: sending the write again inserted the row twice (review finding).
    A write is checked first with a read on the connection (a dead one is replaced before the write
    goes out), and a write that fails in flight is not sent again; a read is."""
    import psycopg

    from fleet.errors import StateUnavailable
    db = PostgresDatabase(postgres_url)
    try:
        db.execute("CREATE TABLE t (x INTEGER)")
        real = psycopg.Connection.execute
        calls = []

        def cut_after_commit(conn, query, *a, **k):
            out = real(conn, query, *a, **k)
            if isinstance(query, str) and query.startswith("INSERT"):
                calls.append(query)
                conn.close()       # the answer never arrives: to the client, a lost connection
                raise psycopg.OperationalError("server closed the connection unexpectedly")
            return out
        monkeypatch.setattr(psycopg.Connection, "execute", cut_after_commit)
        with pytest.raises(StateUnavailable):
            db.execute("INSERT INTO t (x) VALUES (?)", (1,))
        monkeypatch.setattr(psycopg.Connection, "execute", real)
        assert len(calls) == 1 and db.rows("SELECT COUNT(*) FROM t") == [(1,)]   # once, not twice
    finally:
        db.close()
