"""A ledger write that loses to another writer inside a larger transaction, on PostgreSQL as on
SQLite. A run ending with --keep closes its segments and opens the lease's kept ones in one
transaction (money/kept.py hand_over); when a `fleet down` from another shell closed those segments
first, the append's unique key refused the close and the ledger caught up and went on. On
PostgreSQL the refused INSERT aborted the whole transaction: the catching up failed with a raw
"current transaction is aborted" (an internal error at the run's end) and no kept segment opened."""
from __future__ import annotations

from datetime import timedelta

from fleet.models import Lease, Machine, utcnow
from fleet.money.budget import Price
from fleet.money.kept import hand_over
from fleet.money.ledger import Ledger
from fleet.state import open_state


def test_keeping_a_lease_whose_run_segments_another_down_closed(either_state_url, monkeypatch, tmp_path):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))      # hand_over writes a kept marker there
    now = utcnow()
    machine = Machine("m1", "L1", 0, "h", 22, "u", "/k", "ssh-ed25519 AAAA", "/w", gpu_slots=(0,))
    lease = Lease("L1", "local", "t", [machine], now - timedelta(minutes=10), now + timedelta(hours=1),
                  now + timedelta(hours=2), project="team", user="ana")
    run, other = open_state(either_state_url), open_state(either_state_url)
    try:
        run.save_lease(lease)
        ledger = Ledger(run.db)
        seg = ledger.open_segment(lease=lease, machine=machine, price=Price(36_000_000, "list"), run_id="r1",
                                  at=now - timedelta(minutes=5))
        Ledger(other.db).close_orphans("L1", at=now - timedelta(minutes=1))    # another shell's `fleet down`
        assert hand_over(ledger, [seg], lease, now) == 0        # nothing left for the run to bill
        kinds = sorted((e.segment_id.endswith("#kept"), e.kind) for e in Ledger(other.db).read(lease_id="L1").entries)
        assert kinds == [(False, "close"), (False, "open"), (True, "open")]
    finally:
        run.close()
        other.close()
