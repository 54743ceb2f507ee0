"""A ledger row recorded in the year 9999 (a machine's clock far off, or a teammate writing the shared
state) is younger than the seal's lag for good. A seal stopped at the first young row, so no row after
it was sealed again: every report summed them all live, slower and slower, though its totals stayed
right. Rows below a later row older than the lag are sealed with it, the far-future one included."""
from __future__ import annotations

from datetime import timedelta

from fleet.models import utcnow
from fleet.money.ledger import _INSERT, Ledger, iso, row_digest
from fleet.report import build_report, rollup
from fleet.state import open_state

FAR = "9999-12-31T23:59:59.000000Z"


def _row(db, n: int, start: str, recorded: str) -> None:
    values = (f"m@{n}", 0, "tick", start, start, 3_600_000, 1_000_000, 1_000_000, "list", 0, 1, None, None,
              "team", "ana", f"r{n}", "t", "aws", "L1", "m1", recorded)
    db.execute(_INSERT, values + (row_digest(values),))


def test_a_row_dated_far_in_the_future_does_not_stop_sealing(either_state_url):
    old = iso(utcnow() - timedelta(days=2))
    state = open_state(either_state_url)
    try:
        _row(state.db, 1, old, old)
        _row(state.db, 2, old, FAR)
        for n in range(3, 6):
            _row(state.db, n, old, old)
        _row(state.db, 6, old, iso(utcnow()))          # young: stays live until the lag has passed
        ids = [int(r["id"]) for r in state.db.execute("SELECT id FROM ledger ORDER BY id")]
        report = build_report(Ledger(state.db), by="run")
        assert rollup.mark(state.db) == ids[4]
        assert not report.corrupt
        assert (report.entries, report.total.cost_micro, len(report.total.runs)) == (6, 6_000_000, 6)
        assert build_report(Ledger(state.db), by="run").total.cost_micro == 6_000_000
        assert rollup.mark(state.db) == ids[4]
    finally:
        state.close()


def test_a_row_both_started_and_recorded_far_in_the_future_is_sealed_and_counted_once(either_state_url):
    old = iso(utcnow() - timedelta(days=2))
    state = open_state(either_state_url)
    try:
        _row(state.db, 1, FAR, FAR)
        _row(state.db, 2, old, old)
        top = max(int(r["id"]) for r in state.db.execute("SELECT id FROM ledger"))
        for _ in range(2):
            report = build_report(Ledger(state.db), by="run")
            assert rollup.mark(state.db) == top
            assert not report.corrupt and (report.entries, report.total.cost_micro) == (2, 2_000_000)
    finally:
        state.close()
