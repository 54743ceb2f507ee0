"""On PostgreSQL a ledger row's id is given at INSERT and the row is seen at COMMIT, so ids commit out
of order: two controllers tick at once, the first inserts row N, the second inserts and commits
N + 1, and the first commits a moment later. A seal in that moment sealed through N + 1 - 1 = N, a row
it could not see: the mark passed it, no later report read it again, and its cost was missing from
every report for good. Only rows below an old row the seal sees are sealed (rows after the mark are
read live until then)."""
from __future__ import annotations

from datetime import timedelta

from fleet.models import utcnow
from fleet.money.ledger import _INSERT, Ledger, iso, row_digest
from fleet.report import rollup
from fleet.state import open_state
from fleet.state.postgres import to_pyformat


def _values(n: int, start: str, recorded: str) -> tuple:
    values = (f"m@{n}", 0, "tick", start, start, 3_600_000, 1_000_000, 1_000_000, "list", 0, 1, None, None,
              "team", "ana", f"r{n}", "t", "aws", "L1", "m1", recorded)
    return values + (row_digest(values),)


def test_a_row_committed_after_a_later_id_is_still_reported(postgres_url):
    import psycopg
    old = iso(utcnow() - timedelta(days=2))
    state = open_state(postgres_url)
    slow = psycopg.connect(postgres_url)      # a controller's tick, inserted but not yet committed
    try:
        state.db.execute(_INSERT, _values(1, old, old))
        slow.execute(to_pyformat(_INSERT), _values(2, old, iso(utcnow())))
        state.db.execute(_INSERT, _values(3, old, iso(utcnow())))   # another's tick, committed first
        rollup.seal(Ledger(state.db))
        slow.commit()
        groups, damaged = rollup.gather(Ledger(state.db), None, None)
        assert not damaged
        assert sum(int(g["cost_micro"]) for g in groups) == 3_000_000
    finally:
        slow.close()
        state.close()



def test_rows_dated_far_ahead_are_sealed_past_but_vouch_for_no_row_not_yet_committed(postgres_url):
    """A row dated in the year 9999 (a clock far off, a teammate's row) stopped every seal for good;
    past it, a seal still goes only through the last row older than the lag: a far-ahead row says
    nothing of when it was inserted, and the row before it may still be in flight."""
    import psycopg
    old, far = iso(utcnow() - timedelta(days=2)), "9999-12-31T23:59:59.000000Z"
    state = open_state(postgres_url)
    slow = psycopg.connect(postgres_url)
    try:
        state.db.execute(_INSERT, _values(1, old, old))
        state.db.execute(_INSERT, _values(2, old, far))
        state.db.execute(_INSERT, _values(3, old, old))
        slow.execute(to_pyformat(_INSERT), _values(4, old, iso(utcnow())))
        state.db.execute(_INSERT, _values(5, old, far))
        rollup.seal(Ledger(state.db))
        slow.commit()
        assert rollup.mark(state.db) == int(state.db.execute("SELECT id FROM ledger WHERE run_id = 'r3'")[0]["id"])
        groups, damaged = rollup.gather(Ledger(state.db), None, None)
        assert not damaged
        assert sum(int(g["cost_micro"]) for g in groups) == 5_000_000
    finally:
        slow.close()
        state.close()
