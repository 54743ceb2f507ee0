"""Sealed sums: reports from the rollup equal summing every row, for any period, sealed or not."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from fleet.money.ledger import Ledger, parse_iso
from fleet.report import build_report
from fleet.report.build import build_report_rowwise
from fleet.report.rollup import mark, seal
from fleet.state.db import Database
from tests.fixtures.ledger import T0, seed


@pytest.fixture
def db(tmp_path):
    database = Database(tmp_path / "state.db")
    seed(database, 2500, days=5)
    yield database
    database.close()


def same(a, b) -> None:
    assert a.entries == b.entries and [str(c) for c in a.corrupt] == [str(c) for c in b.corrupt]
    assert [r.key for r in a.rows] == [r.key for r in b.rows]
    for x, y in zip([*a.rows, a.total], [*b.rows, b.total]):
        assert (x.cost_micro, x.would_cost_micro, x.runs) == (y.cost_micro, y.would_cost_micro, y.runs)
        assert x.gpu_s == pytest.approx(y.gpu_s) and x.idle_cost_micro == pytest.approx(y.idle_cost_micro)


def test_sealing_is_incremental_and_leaves_young_rows_live(db):
    ledger = Ledger(db)
    recorded = sorted(parse_iso(r["recorded_at"]) for r in db.execute("SELECT recorded_at FROM ledger"))
    middle = recorded[len(recorded) // 2]
    half = seal(ledger, now=middle + timedelta(seconds=300))      # rows recorded before `middle` only
    assert 0 < half < 2500 and mark(db) == half
    later = middle + timedelta(seconds=300)                        # the report seals nothing more
    same(build_report_rowwise(ledger, by="run"), build_report(Ledger(db), by="run", now=later))
    assert mark(db) == half
    assert seal(ledger) == db.execute("SELECT COUNT(*) AS n FROM ledger")[0]["n"] - half
    assert seal(ledger) == 0


@pytest.mark.parametrize("since, until", [
    (None, None),
    (T0 + timedelta(days=1), T0 + timedelta(days=3)),                        # inside days (08:00)
    (datetime(2025, 6, 3, tzinfo=timezone.utc), datetime(2025, 6, 5, tzinfo=timezone.utc)),   # midnights
    (T0 + timedelta(hours=30), T0 + timedelta(hours=33)),                     # within one day
    (T0 + timedelta(days=2, hours=5), None),
    (None, T0 + timedelta(days=1, hours=2)),
])
def test_any_period_matches_summing_rows(db, since, until):
    ledger = Ledger(db)
    seal(ledger)
    for by in ("project", "day"):
        same(build_report(ledger, by=by, since=since, until=until),
             build_report_rowwise(ledger, by=by, since=since, until=until))


def test_damage_after_sealing_does_not_change_reports_and_verify_finds_it(db):
    ledger = Ledger(db)
    before = build_report(ledger)
    db.execute("UPDATE ledger SET cost_micro = cost_micro * 10 WHERE id = 10")
    after = build_report(ledger)
    assert after.total.cost_micro + after.total.would_cost_micro == \
        before.total.cost_micro + before.total.would_cost_micro
    assert [c.id for c in ledger.verify()] == [10]
