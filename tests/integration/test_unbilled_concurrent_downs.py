"""Two `fleet down`s of one lease at once (a user's and `fleet reap`'s, or two teammates'), whose
controller was killed before it reported a machine: each found the machine unbilled and appended a
segment for it. When the two saw it differently (one had the provider's start time, the other's
describe found it gone already and used the lease's), the segment ids differed and the machine was
billed twice. Which machines have no row is read in the transaction that bills them."""
from __future__ import annotations

import threading
from datetime import timedelta

from fleet.models import Lease, Machine, MachineState, utcnow
from fleet.money import unbilled
from fleet.money.ledger import Ledger
from fleet.state import open_state

RATE = 36_000_000          # $36/h: a cent a second


def test_two_downs_at_once_bill_an_unreported_machine_once(either_state_url, monkeypatch):
    created = utcnow() - timedelta(minutes=10)
    machine = Machine("m1", "L1", 0, "h", 22, "u", "/k", "ssh-ed25519 AAAA", "/w", gpu_slots=(0,))
    lease = Lease("L1", "local", "t", [machine], created, created + timedelta(seconds=300),
                  created + timedelta(hours=1), project="team", user="ana", heartbeat_ttl_s=300,
                  meta={"price": {"per_hour_micro": RATE, "source": "lease price"}})
    seen = {"with-start": [MachineState("m1", "gone", started_at=created + timedelta(seconds=60),
                                        deadline_at=created + timedelta(seconds=360))],
            "gone-already": []}
    open_state(either_state_url).close()          # migrated once, before the two meet

    # Both downs have looked before either bills: what two processes at once do.
    meet = threading.Barrier(2, timeout=2)
    run_of = unbilled._run_of

    def meeting(state, lease_id):
        try:
            meet.wait()
        except threading.BrokenBarrierError:
            pass
        return run_of(state, lease_id)

    monkeypatch.setattr(unbilled, "_run_of", meeting)
    errors = []

    def down(view: str) -> None:
        state = open_state(either_state_url)
        try:
            unbilled.bill_unbilled(state, lease, seen[view])
        except Exception as exc:  # noqa: BLE001 — what the test reports
            errors.append(exc)
        finally:
            state.close()

    threads = [threading.Thread(target=down, args=(view,)) for view in seen]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    state = open_state(either_state_url)
    try:
        entries = Ledger(state.db).read(lease_id="L1").entries
        assert len({e.segment_id for e in entries}) == 1, sorted({e.segment_id for e in entries})
        assert sum(e.cost_micro for e in entries) == 3_000_000     # 300 s, as either down saw it
    finally:
        state.close()
