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


def test_a_run_across_the_month_end_charges_the_new_month_only_its_own_hours(db):  # noqa: F811
    """$36/h from November 30 noon against a $500 project month: November's 12 h ($432) fit it, and
    December has its own $500; the run was stopped at 01:53 on December 1 with $67.80 of December
    spent, its November hours charged to December."""
    from decimal import Decimal
    from fleet.money.metering import BudgetLimits, RunMeter, build_scopes
    from fleet.money.budget import BudgetPolicy
    clock = FakeClock(datetime(2026, 11, 30, 12, tzinfo=timezone.utc))
    ledger = Ledger(db, clock)
    limits = BudgetLimits(project_monthly=Decimal(500))
    le = _Lease("l-m", "p1", "ana", "g5", "aws", [_Machine("l-m-n0", (0,))])
    policy = BudgetPolicy(build_scopes(limits, project="p1", user="ana", ledger=ledger, now=clock(),
                                       run_id="r-m", lease_id="l-m"))
    meter = RunMeter(ledger, policy, limits=limits, clock=clock, persist_every_s=10)
    meter.start(le, Price(to_micro(36), "fleet.toml [prices]"), run_id="r-m", at=clock())
    actions = []
    while clock() < datetime(2026, 12, 1, 6, tzinfo=timezone.utc):
        verdict = meter.tick(clock.advance(60))
        actions.append((verdict.action, verdict.scope))
        assert verdict.action != "stop", verdict.message
    assert ("warn", "project 'p1' (2026-11)") in actions
    december = meter.policy.evaluate(meter.spent_micro(clock()), meter.burn_micro_per_hour)
    assert december.scope == "project 'p1' (2026-12)"
    assert december.spent_micro == to_micro(36 * 6)      # six December hours, not 18 hours
    assert ledger.spent_micro(project="p1", since=month_start(clock())) == to_micro(36 * 6)
    # the budget's deadline for the machines is December's $284 left at $36/h, not November's
    assert meter.deadline_s(86400) == (500 - 216) * 100
