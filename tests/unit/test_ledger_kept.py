"""A kept lease's idle time on the ledger (fleet/money/kept.py): handed over from the run's
segments at the same instant, closed for a run on the lease and reopened after, settled at the
deadline (not at a later 'now'), and counted by budget checks while it is still open."""
from __future__ import annotations

from datetime import timedelta

import pytest

from fleet.money.budget import Price, cost_micro, to_micro
from fleet.money.kept import accruing_micro, close_kept, hand_over, open_kept, settle_expired
from fleet.money.ledger import KEPT_SUFFIX, Ledger, iso
from fleet.state.db import Database
from tests.fixtures.ledger import T0, FakeClock, _Lease, _Machine

RATE = Price(to_micro("3.60"), "aws on-demand table")   # $0.001 per second
PER_S = cost_micro(RATE.per_hour_micro, 1)


@pytest.fixture
def db(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    database = Database(tmp_path / "state.db")
    yield database
    database.close()


@pytest.fixture
def clock():
    return FakeClock(T0)


def _lease(db, deadline_s: float, status: str = "active") -> _Lease:
    le = _Lease("l-1", "vision", "ana", "p4d.24xlarge", "aws", [_Machine(f"l-1-m{i}", (0,)) for i in range(2)])
    db.execute("INSERT INTO leases (id, provider, template, project, owner, status, created_at, deadline,"
               " max_deadline, heartbeat_ttl_s) VALUES (?,?,?,?,?,?,?,?,?,?)",
               (le.id, le.provider, le.template, le.project, le.user, status, iso(T0),
                iso(T0 + timedelta(seconds=deadline_s)), iso(T0 + timedelta(hours=1)), 60))
    return le


def _segments(ledger: Ledger) -> dict[str, list]:
    out: dict[str, list] = {}
    for e in ledger.read().entries:
        out.setdefault(e.segment_id, []).append(e)
    return out


def _run_segments(ledger, le, run_id, clock):
    return [ledger.open_segment(lease=le, machine=m, price=RATE, run_id=run_id, at=clock()) for m in le.machines]


def test_the_run_hands_over_to_kept_segments_and_budgets_see_them_accrue(db, clock):
    ledger = Ledger(db, clock)
    le = _lease(db, deadline_s=100)
    run = _run_segments(ledger, le, "r-1", clock)
    clock.advance(10)
    hand_over(ledger, run, le, clock())
    kept = [s for s in _segments(ledger) if s.endswith(KEPT_SUFFIX)]
    assert len(kept) == 2
    assert ledger.spent_micro(project="vision") == 2 * 10 * PER_S
    clock.advance(30)                    # nobody ticks a kept lease; budget checks still see it
    assert ledger.spent_micro(project="vision") == 2 * 40 * PER_S
    # A run on the kept lease leaves the lease's run rows out of its monthly scopes (as before), but
    # never its kept time: that is past spend, not the run's own.
    assert ledger.spent_micro(owner="ana", exclude_run="r-2", exclude_lease="l-1") == 2 * 30 * PER_S
    clock.advance(500)                   # past the deadline: the machines are gone, no more cost
    assert accruing_micro(ledger, project="vision") == 2 * 90 * PER_S
    assert accruing_micro(ledger, project="nlp") == 0


def test_a_run_on_the_kept_lease_closes_and_reopens_kept_time_with_no_overlap(db, clock):
    ledger = Ledger(db, clock)
    le = _lease(db, deadline_s=100)
    hand_over(ledger, _run_segments(ledger, le, "r-1", clock), le, clock.advance(5))
    prices = close_kept(ledger, le, clock.advance(10))
    assert set(prices) == {"l-1-m0", "l-1-m1"}
    second = _run_segments(ledger, le, "r-2", clock)
    open_kept(ledger, le, clock(), prices)          # a concurrent run's machines are busy: nothing opens
    assert len([s for s in _segments(ledger) if s.endswith(KEPT_SUFFIX)]) == 2
    hand_over(ledger, second, le, clock.advance(20))
    settle_expired(db, T0 + timedelta(seconds=1000))
    for machine in ("l-1-m0", "l-1-m1"):
        spans = sorted((e.start_at, e.end_at) for e in ledger.read().entries
                       if e.machine_id == machine and e.duration_ms)
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:])), spans
        assert spans[0][0] == iso(T0) and spans[-1][1] == iso(T0 + timedelta(seconds=100))
    assert sum(e.cost_micro for e in ledger.read().entries) == 2 * 100 * PER_S


def test_an_expired_kept_lease_is_settled_at_its_deadline_once(db, clock):
    ledger = Ledger(db, clock)
    le = _lease(db, deadline_s=60)
    hand_over(ledger, _run_segments(ledger, le, "r-1", clock), le, clock.advance(10))
    assert settle_expired(db, T0 + timedelta(seconds=59)) == []       # not yet
    assert settle_expired(db, T0 + timedelta(hours=5)) == ["l-1"]
    assert settle_expired(db, T0 + timedelta(hours=6)) == []          # closed once
    closes = [e for e in ledger.read().entries if e.kind == "close" and e.segment_id.endswith(KEPT_SUFFIX)]
    assert [e.end_at for e in closes] == [iso(T0 + timedelta(seconds=60))] * 2
    assert sum(e.cost_micro for e in ledger.read().entries) == 2 * 60 * PER_S


def test_the_start_up_check_settles_a_due_marker_and_forgets_it(db, clock, tmp_path):
    from fleet.kept_check import kept_lease_due
    from fleet.money.kept import settle_due
    ledger = Ledger(db, clock)
    le = _lease(db, deadline_s=60)
    hand_over(ledger, _run_segments(ledger, le, "r-1", clock), le, clock.advance(10))   # writes the marker
    marker = tmp_path / "home" / "kept" / "l-1"
    assert marker.exists() and kept_lease_due()            # T0 + 60 s is long past on the real clock
    assert settle_due(T0 + timedelta(hours=1)) == ["l-1"]
    assert not marker.exists() and not kept_lease_due()
    assert sum(e.cost_micro for e in ledger.read().entries) == 2 * 60 * PER_S


def test_a_marker_naming_a_sqlite_state_with_a_postgresql_server_beside_it_settles_nothing(db, clock, tmp_path):
    """A marker says which server a PostgreSQL lease's connection reached (state_db); one that pairs
    that with a SQLite state (edited, or planted) is not settled into the SQLite state, nor a crash."""
    import json

    from fleet.money.kept import settle_due
    ledger = Ledger(db, clock)
    le = _lease(db, deadline_s=60)
    hand_over(ledger, _run_segments(ledger, le, "r-1", clock), le, clock.advance(10))
    marker = tmp_path / "home" / "kept" / "l-1"
    data = json.loads(marker.read_text())
    marker.write_text(json.dumps({**data, "state_db": ["db.example", "5432", "fleet", "ana"]}))
    assert settle_due(T0 + timedelta(hours=1)) == []
    assert marker.exists()


def test_fleet_report_counts_an_open_kept_segment_as_fleet_budget_does_and_once_after_it_closes(db, clock):
    from fleet.report.build import build_report, build_report_rowwise
    ledger = Ledger(db, clock)
    le = _lease(db, deadline_s=100)
    hand_over(ledger, _run_segments(ledger, le, "r-1", clock), le, clock.advance(10))
    clock.advance(30)                    # kept and idle: no rows since it opened
    kept_key = "(lease l-1, kept, idle)"

    def cost_by_run():
        rows = {row.key: row.cost_micro for row in build_report(ledger, by="run", now=clock()).rows}
        summed = {row.key: row.cost_micro for row in build_report_rowwise(ledger, by="run").rows}
        assert rows == summed           # the row-by-row path (many damaged rows) counts the same
        return rows
    assert cost_by_run() == {"r-1": 2 * 10 * PER_S, kept_key: 2 * 30 * PER_S}
    assert sum(cost_by_run().values()) == ledger.spent_micro(project="vision")
    clock.advance(500)                   # past the deadline: it accrues no more
    assert cost_by_run()[kept_key] == 2 * 90 * PER_S
    settle_expired(db, clock())          # closed at the deadline: now in the rows, counted once
    assert cost_by_run() == {"r-1": 2 * 10 * PER_S, kept_key: 2 * 90 * PER_S}


def test_a_hand_over_that_fails_after_its_close_rows_can_be_retried_whole(db, clock, monkeypatch):
    """close() marked the run's segments closed in memory as soon as its rows were in the (outer,
    uncommitted) transaction; a failure after them rolled the rows back but not the marks, so the
    end's retry wrote nothing and the run's last span was never billed (review finding)."""
    from fleet import money
    from fleet.errors import StateUnavailable
    ledger = Ledger(db, clock)
    le = _lease(db, deadline_s=100)
    run = _run_segments(ledger, le, "r-1", clock)
    at = clock.advance(10)
    real = money.kept.open_kept

    def fails(*a, **k):
        raise StateUnavailable("state database: connection lost")
    monkeypatch.setattr(money.kept, "open_kept", fails)
    with pytest.raises(StateUnavailable):
        hand_over(ledger, run, le, at)
    monkeypatch.setattr(money.kept, "open_kept", real)
    assert hand_over(ledger, run, le, at) == 2 * 10 * PER_S          # the retry bills the span
    assert ledger.spent_micro(project="vision") == 2 * 10 * PER_S
