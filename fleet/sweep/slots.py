"""How a warm pool's machines are shared out: a slot is what one trial runs on at a time.

`--gpus-per-trial G` on machines of P GPUs each:
- G ≥ P: a slot is ceil(G / P) whole machines (a multi-node trial);
- G < P: a machine holds P // G slots, each G of its GPU slots (CUDA_VISIBLE_DEVICES), so an
  8-GPU machine runs 8 one-GPU trials at once. Each slot has its own cgroup leaf (trial-N) on its
  machine, so emptying one trial's leaf never touches its neighbours.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..models import Lease


@dataclass(frozen=True)
class Slot:
    machine_ids: tuple[str, ...]
    gpus: tuple[int, ...] | None = None    # a share of its one machine's GPU slots (None: whole machines)
    leaf: str = "trial-0"                  # its cgroup leaf on each of its machines
    port: int | None = None                # its own rendezvous port (None: the lease's; see with_ports)

    @property
    def label(self) -> str:
        share = f" GPUs {','.join(map(str, self.gpus))}" if self.gpus is not None else ""
        return ", ".join(self.machine_ids) + share


def machines_for(parallel: int, gpus_per_trial: int, per_machine: int) -> int:
    """Machines a pool needs for `parallel` trials of `gpus_per_trial` GPUs each."""
    per_machine = max(1, per_machine)
    if gpus_per_trial >= per_machine:
        return parallel * math.ceil(gpus_per_trial / per_machine)
    return math.ceil(parallel / (per_machine // gpus_per_trial))


def slots_of(lease: Lease, gpus_per_trial: int, parallel: int) -> list[Slot]:
    machines = sorted(lease.machines, key=lambda m: m.node_rank)
    if not machines:
        return []
    per_machine = len(machines[0].gpu_slots)
    if per_machine == 0 or gpus_per_trial >= per_machine:
        size = max(1, math.ceil(gpus_per_trial / max(1, per_machine)))
        out = [Slot(tuple(m.id for m in machines[i:i + size])) for i in range(0, len(machines) - size + 1, size)]
    else:
        out = []
        for m in machines:
            gpus = tuple(m.gpu_slots)
            for k in range(len(gpus) // gpus_per_trial):
                out.append(Slot((m.id,), gpus[k * gpus_per_trial:(k + 1) * gpus_per_trial], f"trial-{k}"))
    return out[:max(1, parallel)]


def with_ports(slots: list[Slot], lease: Lease, state) -> list[Slot]:
    """Each slot its own MASTER_PORT: the first keeps the lease's, the others get further ports
    claimed on their node 0's host under the pool's lease (released with it). Trials running at once
    on one host (GPU shares of a machine; local and team-host machines) would otherwise bind the
    same port, or join each other's process group."""
    from dataclasses import replace
    from ..lease_prepare import master_port
    from ..rendezvous import allocate_more_ports
    if len(slots) < 2:
        return slots
    by_id = {m.id: m for m in lease.machines}
    wanted: dict[str, int] = {}
    for slot in slots[1:]:
        wanted[slot.machine_ids[0]] = wanted.get(slot.machine_ids[0], 0) + 1
    # Each machine's first probe runs side by side (an SSH round trip each: a pool of many whole
    # machines would otherwise wait for them one after another); the claims stay on this thread.
    from ..parallel import parallel
    # The first batch is the one allocate_more_ports asks for first (the lease's own order, less the
    # ports claimed), or its answer goes unused and the machine is probed again.
    from ..rendezvous import PROBE_BATCH, PortReservations, candidate_order, probe_free_ports
    order, reservations = candidate_order(lease.id), PortReservations(state.db)
    first_batch = {}
    for mid in wanted:
        taken = reservations.taken(by_id[mid].host)
        first_batch[mid] = [p for p in order if p not in taken][:PROBE_BATCH]
    probed = dict(parallel(list(wanted), lambda mid: (mid, probe_free_ports(by_id[mid], first_batch[mid]))))

    def probe(machine, batch):
        if probed.get(machine.id) is not None and batch == first_batch[machine.id]:
            return probed.pop(machine.id)
        return probe_free_ports(machine, batch)

    ports = {mid: iter(allocate_more_ports(state, lease, by_id[mid], n, probe=probe)) for mid, n in wanted.items()}
    return [replace(slots[0], port=master_port(lease))] + [replace(s, port=next(ports[s.machine_ids[0]]))
                                                           for s in slots[1:]]
