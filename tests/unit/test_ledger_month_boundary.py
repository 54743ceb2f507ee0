"""Ledger rows never span a UTC midnight: a kept lease idle across the end of May was one row dated
May 31, so June's budget counted its June hours while the segment was open and got them back when
it closed (a "refund" that let June be overspent by as much), and `fleet report` put two days on one."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from fleet.money.budget import Price, month_start, to_micro
from fleet.money.ledger import Ledger, iso, utc_days
from tests.fixtures.ledger import FakeClock, _Lease, _Machine
from tests.unit.test_ledger_kept import db  # noqa: F401 — the fixture

RATE = Price(to_micro("10"), "aws on-demand table")        # $10 an hour
MAY_31_NOON = datetime(2026, 5, 31, 12, tzinfo=timezone.utc)


def test_a_kept_segment_across_the_month_end_bills_each_month_its_own_hours(db):  # noqa: F811
    clock = FakeClock(MAY_31_NOON)
    ledger = Ledger(db, clock)
    le = _Lease("l-1", "vision", "ana", "p4d.24xlarge", "aws", [_Machine("l-1-m0", (0,))])
    db.execute("INSERT INTO leases (id, provider, template, project, owner, status, created_at, deadline,"
               " max_deadline, heartbeat_ttl_s) VALUES (?,?,?,?,?,?,?,?,?,?)",
               (le.id, le.provider, le.template, le.project, le.user, "active", iso(clock()),
                iso(clock() + timedelta(days=3)), iso(clock() + timedelta(days=3)), 60))
    segments = [ledger.open_segment(lease=le, machine=m, price=RATE, at=clock(), kept=True) for m in le.machines]
    clock.advance(2 * 24 * 3600)                            # to June 2, noon
    june = month_start(clock())
    open_june = ledger.spent_micro(project="vision", since=june)
    ledger.close(segments, clock())
    assert ledger.spent_micro(project="vision", since=june) == open_june == to_micro("360")   # 36 h of June
    assert ledger.spent_micro(project="vision") == to_micro("480")
    days = sorted({e.start_at[:10] for e in ledger.read().entries if e.cost_micro})
    assert days == ["2026-05-31", "2026-06-01", "2026-06-02"]


def test_utc_days_cuts_at_each_midnight_and_keeps_the_whole():
    start, end = MAY_31_NOON, MAY_31_NOON + timedelta(days=1, hours=13)
    pieces = utc_days(start, end)
    assert [(a.isoformat(), b.isoformat()) for a, b in pieces] == [
        ("2026-05-31T12:00:00+00:00", "2026-06-01T00:00:00+00:00"),
        ("2026-06-01T00:00:00+00:00", "2026-06-02T00:00:00+00:00"),
        ("2026-06-02T00:00:00+00:00", "2026-06-02T01:00:00+00:00")]
    assert utc_days(start, start) == [(start, start)]
