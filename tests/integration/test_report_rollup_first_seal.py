"""The first seal of a team's ledger, by two processes at once (two `fleet report`s, or a report and
a run's end, on a fresh PostgreSQL state): before any seal there is no `ledger_rollup_mark` row, so
SELECT ... FOR UPDATE locked nothing and both went on to seal the same rows. The second then failed on
the mark's primary key, and its `fleet report` ended as an internal error."""
from __future__ import annotations

import threading
from datetime import timedelta

from fleet.models import utcnow
from fleet.money.ledger import _INSERT, Ledger, iso, row_digest
from fleet.report import rollup
from fleet.state import open_state


def _row(db, n: int, start: str, recorded: str) -> None:
    values = (f"m@{n}", 0, "tick", start, start, 3_600_000, 1_000_000, 1_000_000, "list", 0, 1, None, None,
              "team", "ana", f"r{n}", "t", "aws", "L1", "m1", recorded)
    db.execute(_INSERT, values + (row_digest(values),))


def test_two_first_seals_at_once_both_succeed_and_count_each_row_once(either_state_url, monkeypatch):
    old = utcnow() - timedelta(days=2)
    setup = open_state(either_state_url)
    for n in range(3):
        _row(setup.db, n, iso(old), iso(old))
    setup.close()

    # Both sealers meet after their lock on the mark: with a lock that holds, the second waits for the
    # first's commit instead, and the meeting times out.
    meet = threading.Barrier(2, timeout=2)
    aggregate = Ledger.aggregate

    def meeting(self, **kw):
        try:
            meet.wait()
        except threading.BrokenBarrierError:
            pass
        return aggregate(self, **kw)

    monkeypatch.setattr(Ledger, "aggregate", meeting)
    errors, sealed = [], []

    def seal_once():
        state = open_state(either_state_url)
        try:
            sealed.append(rollup.seal(Ledger(state.db)))
        except Exception as exc:  # noqa: BLE001 — what the test reports
            errors.append(exc)
        finally:
            state.close()

    threads = [threading.Thread(target=seal_once) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert sorted(sealed) == [0, 3]
    check = open_state(either_state_url)
    try:
        rows = check.db.execute("SELECT SUM(cost_micro) AS c, SUM(entries) AS n FROM ledger_rollup")
        assert (int(rows[0]["c"]), int(rows[0]["n"])) == (3_000_000, 3)
        assert rollup.mark(check.db) == max(r["id"] for r in check.db.execute("SELECT id FROM ledger"))
    finally:
        check.close()
