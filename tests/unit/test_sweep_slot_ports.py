"""A warm pool's slots each get a rendezvous port of their own (fleet/sweep/slots.py)."""
from __future__ import annotations

from collections import Counter
from datetime import timedelta

from fleet.lease_prepare import RENDEZVOUS
from fleet.models import Lease, Machine, utcnow
from fleet.state import StateStore
from fleet.state.db import Database
from fleet.sweep.slots import slots_of, with_ports


def test_each_machine_is_probed_once_for_its_slots_ports(tmp_path, monkeypatch):
    """The first probe of each machine runs beside the others; its answer was for the range in order
    while the allocation asked for the lease's own order, so it was never used and every machine was
    probed a second time, one after another (an SSH round trip each)."""
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    state = StateStore(Database(tmp_path / "state.db"))
    try:
        now = utcnow()
        lease = Lease(id="l-5107abcd", provider="ssh", template="t", created_at=now,
                      deadline=now + timedelta(hours=1), max_deadline=now + timedelta(hours=2),
                      machines=[Machine(id=f"l-5107abcd-n{r}", lease_id="l-5107abcd", node_rank=r, host=f"box-{r}",
                                        port=22, user="u", key_path="k", host_key="h", workdir=f"/w/{r}",
                                        gpu_slots=(0, 1, 2, 3)) for r in range(2)])
        lease.meta[RENDEZVOUS] = {"host": "box-0", "port": 29001}
        state.save_lease(lease)
        probed: Counter = Counter()

        def probe(machine, candidates):
            probed[machine.id] += 1
            return list(candidates)
        monkeypatch.setattr("fleet.rendezvous.probe_free_ports", probe)
        slots = with_ports(slots_of(lease, 1, 8), lease, state)
    finally:
        state.close()
    assert len(slots) == 8 and len({(s.machine_ids[0], s.port) for s in slots}) == 8
    assert slots[0].port == 29001
    assert probed == {"l-5107abcd-n0": 1, "l-5107abcd-n1": 1}, probed
