"""How a report reads the sealed rollup and the ledger's rows for a period: rows straddling
--since/--until count their share inside it, the HTML budgets section stops at --until, sealed
rows read raw for an edge day are verified, and a seal by another process while a report reads is
not counted twice."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from fleet.money.budget import Price, to_micro
from fleet.money.ledger import Ledger
from fleet.report import build_report
from fleet.report.build import build_report_rowwise
from fleet.report.budgets import month_budgets_until
from fleet.report.rollup import gather, seal
from fleet.state.db import Database
from tests.fixtures.ledger import FakeClock, _Lease, _Machine

UTC = timezone.utc
RATE = Price(to_micro(36), "aws on-demand table")          # $36 an hour: $0.01 a second
LATER = datetime(2026, 12, 9, tzinfo=UTC)                  # a report's "now" that seals everything


def T(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def db(tmp_path):
    database = Database(tmp_path / "state.db")
    yield database
    database.close()


def run(ledger: Ledger, start: datetime, end: datetime, *, tick_s: float | None = None, lease_id: str = "l-1"):
    """One machine from start to end: ticks every tick_s, or one close at the end (a kept segment's
    or an orphan's: one row per UTC day)."""
    clock = ledger.clock
    clock.now = start
    le = _Lease(lease_id, "vision", "ana", "p4d.24xlarge", "aws", [_Machine(f"{lease_id}-m0", (0,))])
    segs = [ledger.open_segment(lease=le, machine=m, price=RATE, run_id=f"r-{lease_id}", at=start)
            for m in le.machines]
    while tick_s and clock.now + timedelta(seconds=tick_s) < end:
        ledger.append(segs, clock.advance(tick_s))
    clock.now = end
    ledger.close(segs, end)


@pytest.mark.parametrize("now", [T("2026-12-05T07:00"), LATER], ids=["unsealed", "sealed"])
@pytest.mark.parametrize("since, until, hours", [
    ("2026-12-04T12:00", "2026-12-04T18:00", 6),      # inside one day-long row: was $0
    (None, "2026-12-04T12:00", 26),                    # ends inside a row: was the whole day, 38 h
    ("2026-12-04T12:00", None, 19),
    ("2026-12-03T11:30", "2026-12-05T06:00", 42.5),
])
def test_a_row_straddling_since_or_until_counts_its_share_inside(db, now, since, until, hours):
    ledger = Ledger(db, FakeClock(T("2026-12-03T10:00")))
    run(ledger, T("2026-12-03T10:00"), T("2026-12-05T07:00"))      # closed long after: 3 day rows
    start, end = since and T(since), until and T(until)
    for rep in (build_report(ledger, since=start, until=end, now=now),
                build_report_rowwise(ledger, since=start, until=end)):
        assert rep.total.cost_micro == to_micro(36 * hours)
        assert rep.total.machine_s == pytest.approx(hours * 3600)
        assert not rep.corrupt


def test_ticked_rows_and_one_closing_row_report_the_same_window(db):
    """`fleet down` closing a segment at once must not change the report of a past window."""
    other = Database(db.path.parent / "other.db")
    try:
        ticked, closed = Ledger(db, FakeClock()), Ledger(other, FakeClock())
        run(ticked, T("2026-12-04T10:00:00"), T("2026-12-04T20:00:00"), tick_s=7 * 60)
        run(closed, T("2026-12-04T10:00:00"), T("2026-12-04T20:00:00"))
        for ledger in (ticked, closed):
            for now in (T("2026-12-04T20:01"), LATER):
                rep = build_report(ledger, since=T("2026-12-04T12:03"), until=T("2026-12-04T17:58"), now=now)
                assert rep.total.cost_micro == to_micro(36) * 355 // 60
    finally:
        other.close()


def test_the_html_budgets_section_stops_at_until(db):
    ledger = Ledger(db, FakeClock(T("2025-06-04T10:00")))
    run(ledger, T("2025-06-04T10:00"), T("2025-06-04T11:00"), tick_s=60)
    run(ledger, T("2025-06-20T10:00"), T("2025-06-20T11:00"), tick_s=60, lease_id="l-2")
    budgets = type("B", (), {"project_monthly": Decimal(500), "user_monthly": None})()
    month = month_budgets_until(ledger, T("2025-06-10T12:00"), budgets)
    line = next(b for b in month.lines if b.scope == "project")
    assert line.counted_micro == to_micro(36)          # was $72: June 20 is after --until
    assert line.forecast_micro == round(to_micro(36) * 30 / 9.5) and not line.forecast_over


def test_a_row_edited_after_sealing_is_left_out_and_listed_in_a_partial_day(db):
    ledger = Ledger(db, FakeClock(T("2026-12-04T10:00")))
    run(ledger, T("2026-12-04T10:00"), T("2026-12-04T11:00"), tick_s=60)
    day = build_report(ledger, since=T("2026-12-04"), now=LATER)          # seals every row
    assert day.total.cost_micro == to_micro(36)
    row = db.execute("SELECT id, cost_micro FROM ledger WHERE seq = 3")[0]
    db.execute("UPDATE ledger SET cost_micro = 999000000000 WHERE id = ?", (row["id"],))
    part = build_report(ledger, since=T("2026-12-04T00:00:01"), now=LATER)
    assert part.total.cost_micro == to_micro(36) - row["cost_micro"]     # was $999,030
    assert part.corrupt == [f"ledger row {row['id']}: contents do not match its digest (edited or damaged)"]


def test_a_seal_by_another_process_while_a_report_reads_counts_nothing_twice(db, monkeypatch):
    ledger = Ledger(db, FakeClock(T("2026-12-02T08:00")))
    run(ledger, T("2026-12-02T08:00"), T("2026-12-02T10:00"), tick_s=60)
    run(ledger, T("2026-12-03T08:00"), T("2026-12-03T10:00"), tick_s=60, lease_id="l-2")
    seal(ledger, now=T("2026-12-02T10:10"))                                 # the first run only
    other = Database(db.path)
    real = db.execute
    raced = []

    def execute(sql, params=()):
        rows = real(sql, params)
        # right after this report read the sealed mark (outside a transaction: not its own seal)
        if "ledger_rollup_mark" in sql and not db._conn().in_transaction and not raced:
            raced.append(seal(Ledger(other), now=LATER))                  # another `fleet report`
        return rows

    monkeypatch.setattr(db, "execute", execute)
    try:
        groups, bad = gather(ledger, None, None, now=T("2026-12-02T10:10"))
    finally:
        other.close()
    assert raced and raced[0] > 0
    assert sum(int(g["cost_micro"]) for g in groups) == to_micro(144) and not bad     # was $216
