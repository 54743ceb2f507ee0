"""`HandedLease`: the lease a detached run's launcher made, as the supervisor on its node 0 runs it.

The launcher (fleet/run/node_launch.py) did stages plan, pin and budget on the laptop and leased
the machines; the supervisor on node 0 runs the whole pipeline on them as a fresh lease — staging,
setup, heartbeats, budget, execute, collect, record — except that the machines already exist
(`acquire` hands them over; the ledger opens at the lease's creation, so every second since the
provider made them is billed) and the inputs are already pinned (`pins`). `release` releases every
machine but node 0: this process runs there, so node 0 is released last, after the run is
recorded (fleet/run/node_supervisor.py).
"""
from __future__ import annotations

from ..config.model import Config
from ..models import Lease
from .context import RunContext
from .lease import NewLease, OnMachine, _masker, pins_meta, resumed_from
from .offer import offer_for_lease
from .types import BudgetGrant, Offer, PinnedInputs


class HandedLease:
    fresh = True          # stage, setup, heartbeats and release run as for a new lease

    def __init__(self, provider, lease: Lease, pins: PinnedInputs, supervisor_dir: str | None = None):
        self.provider = provider
        self.supervisor_dir = supervisor_dir    # where this supervisor runs on node 0 (`fleet down` checks it)
        self.lease = lease
        self.lease_id = lease.id
        self.pins = pins                     # the launcher pinned them: Pipeline adopts, never re-pins
        self.node0 = min(lease.machines, key=lambda m: m.node_rank)

    def offer(self, config: Config) -> Offer:
        return offer_for_lease(self.provider, self.lease)

    def begin(self, ctx: RunContext, first_deadline_s: int, grant: BudgetGrant, pins: PinnedInputs) -> None:
        """The lease row exists (the launcher made it); the run row is made here, naming this
        process (on node 0) as its controller."""
        ctx.state.create_run(ctx.run_id, lease_id=self.lease_id, project=ctx.offer.project, user=ctx.offer.user,
                             command=ctx.command, log_path=str(ctx.run_dir / "logs"), output_dir=str(ctx.run_dir),
                             meta={"provider": ctx.offer.provider, "template": ctx.offer.template.name,
                                   "gpus": ctx.offer.gpus, "pins": pins_meta(pins), "detached": True,
                                   "supervised_on": self.node0.id, "supervisor_dir": self.supervisor_dir,
                                   **resumed_from(ctx)},
                             masker=_masker(ctx))

    def acquire(self, ctx: RunContext, deadline_s: int, on_machine: OnMachine) -> Lease:
        return self.lease

    def release(self, ctx: RunContext, lease: Lease | None) -> bool:
        others = [m.id for m in (lease or self.lease).machines if m.id != self.node0.id]
        ctx.events.phase("release", f"destroying {len(others)} machine(s); node 0 ({self.node0.id}), where "
                                    "this supervisor runs, last")
        if not others:
            return True
        try:
            self.provider.release_machines(lease or self.lease, others)
            return True
        except Exception as exc:  # noqa: BLE001 — node 0's release (the whole lease) retries them
            ctx.events.warn(f"release of {len(others)} machine(s) failed ({exc}); they are released with node 0")
            return False


class PinnedNewLease(NewLease):
    """Attempt N>1 of a run supervised from node 0: a new lease leased from there, running the
    inputs the launcher pinned (node 0 has no copy of the code to pin again)."""

    def __init__(self, provider, pins: PinnedInputs):
        super().__init__(provider)
        self.pins = pins



LOGIN_NODE = "login node"   # the run row's `supervised_on` for a supervisor on the Slurm login node
NODE_0 = "node 0"           # a lease's `supervised_on` until its node 0 is known (then that machine's id)


class LoginNodeLease(PinnedNewLease):
    """A detached Slurm run supervised from the cluster's login node (fleet/providers/slurm/handoff.py):
    the supervisor there leases for itself (sbatch/salloc, the node steps' srun frontends are its own
    children on the login node), running the inputs the launcher pinned. The run row says where it
    runs, so `fleet down` from any computer asks it to stop over the login node's SSH."""

    def __init__(self, provider, pins: PinnedInputs, supervisor_dir: str, relaunch: dict | None = None):
        super().__init__(provider, pins)
        self.supervisor_dir = supervisor_dir
        self.relaunch = relaunch

    def run_meta(self) -> dict:
        return {"supervised_on": LOGIN_NODE, "supervisor_dir": self.supervisor_dir}

    def lease_meta(self) -> dict:
        # What the launcher recorded of its fleet.toml and command line (remote_supervisor.relaunch_meta):
        # `fleet reap` starts the next attempt from it when this supervisor is gone (lost_resume.py).
        return {"relaunch": self.relaunch} if self.relaunch else {}
