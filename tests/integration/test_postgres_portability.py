"""Every store that lives in the state database behaves the same on SQLite and PostgreSQL.

The cost ledger, the report built from it and the run-record chain are written by other modules;
this runs them through their public API on both databases and compares what comes back, so SQL
that only SQLite accepts (or that returns other types on PostgreSQL) is caught here.
"""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from fleet.money.budget import Price
from fleet.money.ledger import Ledger, TickTelemetry
from fleet.records.chain import RunRecord, append_record, list_records, verify_chain
from fleet.report import build_report
from fleet.state.db import Database
from fleet.state.postgres import PostgresDatabase

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    if request.param == "postgresql":
        database = PostgresDatabase(request.getfixturevalue("postgres_url"))
    else:
        database = Database(tmp_path / "state.db")
    yield database
    database.close()


def _ledger_with_a_long_big_lease(db) -> Ledger:
    """8 GPUs for 30 days at $98.32/h, ticked hourly, with telemetry: big numbers on purpose."""
    clock = {"now": T0}
    ledger = Ledger(db, clock=lambda: clock["now"])
    lease = SimpleNamespace(project="vision", user="alice", template="p5", provider="aws", id="l-1")
    machine = SimpleNamespace(id="l-1-n0", gpu_slots=tuple(range(8)))
    seg = ledger.open_segment(lease=lease, machine=machine, price=Price(98_320_000, "aws on-demand"),
                              run_id="r-1", at=T0)
    for hour in range(1, 30 * 24 + 1):
        clock["now"] = T0 + timedelta(hours=hour)
        ledger.append([seg], clock["now"], telemetry={"l-1-n0": TickTelemetry(870, 600)})
    ledger.close([seg], clock["now"])
    return ledger


def test_ledger_and_report_agree_on_both_databases(db):
    ledger = _ledger_with_a_long_big_lease(db)
    read = ledger.read()
    assert read.corrupt == [] and len(read.entries) == 30 * 24 + 2
    assert ledger.verify() == []
    total = sum(e.cost_micro for e in read.entries)
    assert total == 98_320_000 * 24 * 30
    assert ledger.spent_micro(owner="alice") == total
    report = build_report(ledger, by="user", since=T0 - timedelta(days=1), until=T0 + timedelta(days=40))
    assert report is not None
    groups = ledger.aggregate()
    assert sum(int(g["cost_micro"]) for g in groups) == total
    assert sum(int(g["gpu_ms"]) for g in groups) == 8 * 30 * 24 * 3600 * 1000
    for g in groups:   # numbers come back as numbers Python can add, whatever the database
        float(g["util_weighted_ms"]) + 1.0
        float(g["idle_cost_micro"]) + 1.0


def test_run_record_chain_on_both_databases(db):
    for i in range(3):
        append_record(RunRecord(run_id=f"r-{i}", command="python t.py", user="bob"), db)
    assert [r.run_id for r in list_records(db)] == ["r-2", "r-1", "r-0"]
    assert verify_chain(db) == []


WRITERS = 16     # more than append_record's retries: each round of a free-for-all has one winner


def test_racing_record_writers_keep_one_linear_chain(db):
    errors = []
    start = threading.Barrier(WRITERS)

    def write(i: int) -> None:
        start.wait()
        try:
            append_record(RunRecord(run_id=f"race-{i}", command="x"), db)
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))
    threads = [threading.Thread(target=write, args=(i,)) for i in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert verify_chain(db) == [] and len(list_records(db)) == WRITERS


def test_a_month_old_orphan_is_closed_in_one_row(db):
    """A controller that died: `fleet down` a month later bills the whole gap in one close row
    (duration and cost far beyond 32-bit integers)."""
    clock = {"now": T0}
    ledger = Ledger(db, clock=lambda: clock["now"])
    lease = SimpleNamespace(project="vision", user="alice", template="p5", provider="aws", id="l-9")
    machine = SimpleNamespace(id="l-9-n0", gpu_slots=tuple(range(8)))
    ledger.open_segment(lease=lease, machine=machine, price=Price(98_320_000, "aws on-demand"), at=T0)
    added = ledger.close_orphans("l-9", at=T0 + timedelta(days=30))
    assert added == 98_320_000 * 24 * 30
    assert ledger.spent_micro(project="vision") == added
    report = build_report(ledger, by="project")
    assert report is not None and ledger.verify() == []


def test_a_missing_anchor_is_found_past_the_first_page_of_a_team_database(postgres_url, fleet_home):
    """Whether a team member should hold an anchor: their own record may be the team's oldest. The
    records are read a page at a time (no query returns them all), and the oldest is still reached."""
    from fleet.records.anchor import check_anchors, tip_path
    db = PostgresDatabase(postgres_url)
    try:
        append_record(RunRecord(run_id="r-mine", command="x", user="tester"), db)
        for i in range(450):
            append_record(RunRecord(run_id=f"r-{i:03d}", command="x", user="alice"), db)
        tip_path(db).unlink()
        sizes = []
        execute = db.execute

        def spy(sql, params=()):
            rows = execute(sql, params)
            sizes.append(len(rows))
            return rows
        db.execute = spy
        assert [p for p in check_anchors(db) if "is missing" in p], "tester's own record went unseen"
        assert max(sizes) <= 200, max(sizes)
    finally:
        db.close()
