"""How a report reads the sealed rollup and the ledger's rows for a period: a seal by another
process while a report reads is not counted twice."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from fleet.money.budget import Price, to_micro
from fleet.money.ledger import Ledger
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
