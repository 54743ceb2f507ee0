"""The ledger: append-only segments, exact totals, crash behaviour, damaged rows reported."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from fleet.money.budget import Price, cost_micro, to_micro
from fleet.errors import EnvironmentProblem
from fleet.money.ledger import Ledger, TickTelemetry
from fleet.state.db import Database
from tests.fixtures.ledger import FakeClock, _Lease, _Machine

T0 = datetime(2025, 6, 2, 8, 0, tzinfo=timezone.utc)
RATE = Price(to_micro("3.60"), "aws on-demand table")   # $0.001 per second


@pytest.fixture
def db(tmp_path):
    database = Database(tmp_path / "state.db")
    yield database
    database.close()


@pytest.fixture
def clock():
    return FakeClock(T0)


def lease(n=2, project="vision", user="ana", lease_id="l-1"):
    return _Lease(lease_id, project, user, "p4d.24xlarge", "aws",
                  [_Machine(f"{lease_id}-m{i}", (0, 1, 2, 3)) for i in range(n)])


def all_rows(db):
    return db.execute("SELECT * FROM ledger ORDER BY id")


def test_segments_are_written_as_open_ticks_close_and_sum_exactly(db, clock):
    ledger = Ledger(db, clock)
    le = lease()
    segs = [ledger.open_segment(lease=le, machine=m, price=RATE, run_id="r-1") for m in le.machines]
    total = 0
    for _ in range(7):
        clock.advance(13.3)                                       # awkward tick lengths: no drift
        total += ledger.append(segs, telemetry={"l-1-m0": TickTelemetry(870, 0)})
    clock.advance(4)
    total += ledger.close(segs)
    expected = 2 * cost_micro(RATE.per_hour_micro, 7 * 13.3 + 4)
    assert total == expected
    read = ledger.read()
    assert not read.corrupt
    assert sum(e.cost_micro for e in read.entries) == expected
    kinds = [e.kind for e in read.entries if e.machine_id == "l-1-m0"]
    assert kinds == ["open"] + ["tick"] * 7 + ["close"]
    assert [e.seq for e in read.entries if e.machine_id == "l-1-m0"] == list(range(9))
    m0 = [e for e in read.entries if e.machine_id == "l-1-m0" and e.kind == "tick"]
    assert all(e.gpu_util_permille == 870 and e.gpus == 4 for e in m0)
    assert {e.run_id for e in read.entries} == {"r-1"} and {e.project for e in read.entries} == {"vision"}
    # consecutive rows of a segment tile time with no gap or overlap
    for a, b in zip(m0, m0[1:]):
        assert a.end_at == b.start_at


def test_rows_are_never_rewritten(db, clock):
    ledger = Ledger(db, clock)
    le = lease(1)
    segs = [ledger.open_segment(lease=le, machine=le.machines[0], price=RATE)]
    clock.advance(10)
    ledger.append(segs)
    before = all_rows(db)
    clock.advance(10)
    ledger.close(segs)
    clock.advance(10)
    assert ledger.append(segs) == 0                      # a closed segment takes no more rows
    after = all_rows(db)
    assert after[:len(before)] == before and len(after) == len(before) + 1


def test_a_crash_loses_at_most_the_current_tick_and_reap_closes_it(db, clock):
    ledger = Ledger(db, clock)
    le = lease(2)
    segs = [ledger.open_segment(lease=le, machine=m, price=RATE) for m in le.machines]
    for _ in range(5):
        clock.advance(10)
        ledger.append(segs)
    clock.advance(7)                                      # the controller dies mid-tick: 7 s unrecorded
    del segs
    assert ledger.spent_micro() == 2 * cost_micro(RATE.per_hour_micro, 50)
    clock.advance(20)                                     # machines released by their watchdog later
    added = Ledger(db, clock).close_orphans("l-1")
    assert added == 2 * cost_micro(RATE.per_hour_micro, 27)
    assert ledger.spent_micro() == 2 * cost_micro(RATE.per_hour_micro, 77)
    assert Ledger(db, clock).close_orphans("l-1") == 0     # idempotent


def test_a_failed_write_is_retried_whole_next_tick(db, clock, monkeypatch):
    ledger = Ledger(db, clock)
    le = lease(1)
    segs = [ledger.open_segment(lease=le, machine=le.machines[0], price=RATE)]
    clock.advance(10)

    def full_disk(*_args, **_kw):
        raise EnvironmentProblem("state database: disk is full")

    monkeypatch.setattr(db, "executemany", full_disk)
    with pytest.raises(EnvironmentProblem):
        ledger.append(segs)
    monkeypatch.undo()
    clock.advance(10)
    assert ledger.append(segs) == cost_micro(RATE.per_hour_micro, 20)
    assert [e.seq for e in ledger.read().entries] == [0, 1]


def test_damaged_rows_are_reported_and_left_out_not_fatal(db, clock):
    ledger = Ledger(db, clock)
    le = lease(1)
    segs = [ledger.open_segment(lease=le, machine=le.machines[0], price=RATE)]
    for _ in range(3):
        clock.advance(100)
        ledger.append(segs)
    ids = [r["id"] for r in all_rows(db)]
    db.execute("UPDATE ledger SET cost_micro = 1 WHERE id = ?", (ids[1],))             # edited by hand
    db.execute("UPDATE ledger SET end_at = 'not a time' WHERE id = ?", (ids[2],))     # damaged
    read = ledger.read()
    assert [c.id for c in read.corrupt] == [ids[1], ids[2]]
    assert all("digest" in c.reason for c in read.corrupt)
    assert [e.id for e in read.entries] == [ids[0], ids[3]]
    assert f"ledger row {ids[1]}" in str(read.corrupt[0])


def test_period_and_scope_filters(db, clock):
    ledger = Ledger(db, clock)
    a, b = lease(1, "vision", "ana", "l-a"), lease(1, "nlp", "bo", "l-b")
    sa = [ledger.open_segment(lease=a, machine=a.machines[0], price=RATE, run_id="r-a")]
    sb = [ledger.open_segment(lease=b, machine=b.machines[0], price=RATE, run_id="r-b")]
    clock.advance(1000)
    ledger.append(sa + sb)
    one = cost_micro(RATE.per_hour_micro, 1000)
    assert ledger.spent_micro(project="vision") == one
    assert ledger.spent_micro(owner="bo") == one
    assert ledger.spent_micro(exclude_run="r-a") == one
    assert ledger.spent_micro(exclude_lease="l-b") == one
    assert ledger.spent_micro(since=clock()) == 0
    assert len(ledger.read(project="nlp").entries) == 2
    assert ledger.read(since=T0, until=T0).entries == []


def test_a_run_writing_after_another_process_closed_its_segments_bills_each_second_once(db, clock):
    """`fleet down` from another shell closes a running run's segments; the run's next tick must
    neither fail on the (segment, seq) key nor bill past the close."""
    run_ledger, down_ledger = Ledger(db, clock), Ledger(db, clock)
    le = lease(n=1)
    segs = [run_ledger.open_segment(lease=le, machine=m, price=RATE, run_id="r-1") for m in le.machines]
    clock.advance(10)
    run_ledger.append(segs)                           # the run's tick: 10 s
    clock.advance(5)
    down_ledger.close_orphans("l-1")                  # the other process releases: 5 s more, closed
    clock.advance(7)
    assert run_ledger.append(segs) == 0               # the run catches up, sees the close, bills nothing
    assert run_ledger.close(segs) == 0 and segs[0].closed
    rows = all_rows(db)
    assert [r["kind"] for r in rows] == ["open", "tick", "close"]
    assert sum(r["duration_ms"] for r in rows) == 15_000


def test_a_run_writing_after_another_process_ticked_continues_from_its_row(db, clock):
    run_ledger, other = Ledger(db, clock), Ledger(db, clock)
    le = lease(n=1)
    segs = [run_ledger.open_segment(lease=le, machine=m, price=RATE, run_id="r-1") for m in le.machines]
    clock.advance(4)
    other.append(other.open_segments("l-1"))          # another writer's tick: 4 s
    clock.advance(6)
    run_ledger.close(segs)                             # 6 s more, not 10 again
    rows = all_rows(db)
    assert [(r["kind"], r["seq"]) for r in rows] == [("open", 0), ("tick", 1), ("close", 2)]
    assert sum(r["duration_ms"] for r in rows) == 10_000
    assert sum(r["cost_micro"] for r in rows) == cost_micro(RATE.per_hour_micro, 10)
