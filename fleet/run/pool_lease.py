"""Where a sweep trial's machines come from: some machines of a warm pool's lease (fleet/sweep).

The pool leased, staged and set the machines up once, and holds them alive with its own heartbeat;
a trial is a run on a kept lease (the KeptLease path: no lease, stage, setup or release stage) that
carries the pool's pinned inputs, so its record names the same code commit and data snapshots a
`fleet up` would, and whose machine time the pool's run already pays (its cost is attributed).
"""
from __future__ import annotations

from dataclasses import replace

from ..models import Lease
from .context import RunContext
from .lease import KeptLease, _masker, pins_meta
from .types import BudgetGrant, PinnedInputs


def sub_lease(lease: Lease, machine_ids: list[str], gpus: tuple[int, ...] | None = None,
              port: int | None = None) -> Lease:
    """The pool's lease narrowed to some of its machines, ranked 0… in the given order; with
    `gpus`, to those GPU slots of its one machine (several trials share a machine's GPUs); with
    `port`, its own rendezvous port (trials at once must not share one)."""
    from ..lease_prepare import RENDEZVOUS
    by_id = {m.id: m for m in lease.machines}
    machines = [replace(by_id[mid], node_rank=rank, **({"gpu_slots": gpus} if gpus is not None else {}))
                for rank, mid in enumerate(machine_ids)]
    meta = dict(lease.meta)
    if port is not None and machines:
        meta[RENDEZVOUS] = {"host": machines[0].host, "port": port}
    return replace(lease, machines=machines, meta=meta)


class PoolLease(KeptLease):
    """A trial's share of a warm pool: the pool's lease id, a few of its machines, its pins."""

    def __init__(self, provider, lease: Lease, pins: PinnedInputs, *, sweep_id: str, trial: str,
                 pool_run_id: str):
        super().__init__(provider, lease)
        self.pins = pins
        self.sweep_id, self.trial, self.pool_run_id = sweep_id, trial, pool_run_id

    def begin(self, ctx: RunContext, first_deadline_s: int, grant: BudgetGrant, pins: PinnedInputs) -> None:
        ctx.state.create_run(ctx.run_id, lease_id=self.lease.id, project=self.lease.project, user=self.lease.user,
                             command=ctx.command, log_path=str(ctx.run_dir / "logs"), output_dir=str(ctx.run_dir),
                             meta={"provider": ctx.offer.provider, "template": ctx.offer.template.name,
                                   "gpus": ctx.offer.gpus, "pins": pins_meta(pins), "sweep": self.sweep_id,
                                   "trial": self.trial, "paid_by_run": self.pool_run_id,
                                   "params": {k: v for k, v in ctx.config.env.items() if k.startswith("FLEET_PARAM_")}},
                             masker=_masker(ctx))

    def kept_until(self) -> str | None:
        return None      # the pool releases these machines when the sweep ends
