"""Stages "lease" and "release", and where a run's machines come from.

`NewLease` (`fleet up`, `fleet rerun`): the provider makes the machines for the Offer, each one
recorded and metered the moment it is reported, and destroys them at the end (or keeps them).
`KeptLease` (`fleet run LEASE`): the machines exist already and stay; both stages are skipped, and
so are staging and setup (done when the lease was made). The kept lease's own deadline holds.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Callable

from ..config.model import Config
from ..errors import UsageError
from ..ids import new_lease_id
from ..models import Lease, Machine, to_jsonable, utcnow
from ..providers.base import (HasLeaseMetadata, LeaseWatch, Queueing, QueueStatus, ReportsMachines,
                              StopsOnCancel)
from .context import RunContext
from .keep import release_lease
from .offer import choose_offer, offer_for_lease
from .types import BudgetGrant, Offer, PinnedInputs

# In the run row from the start: a run whose controller dies is recorded with its pinned inputs
# (fleet/lost_runs.py).
_PIN_KEYS = ("code_commit", "code_snapshot", "code_dirty_snapshot", "code_subdir", "data_snapshots", "store")


def pins_meta(pins: PinnedInputs) -> dict:
    """The pins as a run row records them (and as launch_seal.py seals them): the set ones only."""
    values = {"code_commit": pins.code_commit, "code_snapshot": pins.code_snapshot,
              "code_dirty_snapshot": pins.code_dirty_snapshot, "code_subdir": pins.code_subdir,
              "data_snapshots": dict(pins.data_snapshots), "store": pins.store_url}
    return {k: v for k, v in values.items() if k in _PIN_KEYS and v}


def _masker(ctx: RunContext):
    from ..masking import Masker
    return Masker.for_config(ctx.config)

OnMachine = Callable[[Machine], None]


class NewLease:
    fresh = True          # stages lease, stage inputs, setup and release run

    def __init__(self, provider):
        self.provider = provider
        self.reported: list[Machine] = []
        self.lease_id = new_lease_id()

    def offer(self, config: Config) -> Offer:
        return choose_offer(self.provider, config)

    def begin(self, ctx: RunContext, first_deadline_s: int, grant: BudgetGrant, pins: PinnedInputs) -> None:
        """Recorded before any machine exists, so a controller killed mid-lease leaves a trace
        (with the price and region `fleet down` bills and finds leftovers with)."""
        offer = ctx.offer
        simulated = " (simulated GPUs)" if offer.template.simulated_gpus else ""
        kind = offer.instance_type or offer.template.name
        named = f" ({offer.template.name})" if kind != offer.template.name else ""
        spot = ", spot" if offer.spot else ""
        ctx.events.phase("lease", f"{offer.machine_count} × {kind}{named} = {offer.gpus} "
                                  f"GPU{'' if offer.gpus == 1 else 's'}{spot}{simulated}")
        provider_meta = self.provider.lease_meta() if isinstance(self.provider, HasLeaseMetadata) else {}
        resumes = resumed_from(ctx)
        # The run first: a second resume of the same run is refused there (state/resumes.py), before a lease row.
        ctx.state.create_run(ctx.run_id, lease_id=ctx.lease_id, project=offer.project, user=offer.user,
                             command=ctx.command, log_path=str(ctx.run_dir / "logs"), output_dir=str(ctx.run_dir),
                             meta={"provider": offer.provider, "template": offer.template.name, "gpus": offer.gpus,
                                   "pins": pins_meta(pins), "detached": ctx.options.detached, **resumes,
                                   **self.run_meta()},
                             masker=_masker(ctx))
        ctx.state.begin_lease(ctx.lease_id, ctx.plan, deadline_s=first_deadline_s,
                              meta={**grant.lease_meta(), **provider_meta,
                                    "first_deadline_s": first_deadline_s, **self.lease_meta()})

    def run_meta(self) -> dict:
        """More for the run row's meta (where a detached run's supervisor runs: handed_lease.py)."""
        return {}

    def lease_meta(self) -> dict:
        """More for the lease's meta (how `fleet reap` starts a lost run's next attempt: handed_lease.py)."""
        return {}

    def acquire(self, ctx: RunContext, deadline_s: int, on_machine: OnMachine) -> Lease:
        """provider.lease, with each machine recorded in the state and `on_machine` called (its cost
        segment opened) the moment the provider reports it: a controller SIGKILLed inside lease()
        used to leave machines that no ledger entry knew of (fault matrix: "machines unbilled").
        A provider that StopsOnCancel gets the run's cancel flag: Ctrl-C / SIGTERM while many
        machines are being made stops it, and it releases what it made."""
        options: dict = {}
        if isinstance(self.provider, StopsOnCancel):
            options["cancel"] = ctx.cancel
        if isinstance(self.provider, ReportsMachines):
            def reported(machine: Machine) -> None:
                self.reported.append(machine)
                # Its watchdog started just before: now + deadline_s is at or after its own deadline.
                ctx.state.record_machine(ctx.lease_id, machine, deadline=utcnow() + timedelta(seconds=deadline_s))
                on_machine(machine)
            options["on_machine"] = reported
        if isinstance(self.provider, Queueing):
            options["watch"] = _watch(ctx)
        lease = self.provider.lease(ctx.plan, ctx.lease_id, deadline_s, **options)
        ctx.state.activate_lease(lease)
        return lease

    def release(self, ctx: RunContext, lease: Lease | None) -> bool:
        count = len(lease.machines) if lease is not None else ctx.offer.machine_count
        ctx.events.phase("release", f"destroying {count} machine(s)")
        # A failed lease() cleans up after itself; releasing what it reported is the backstop.
        made = lease if lease is not None else _partial_lease(ctx, self.reported) if self.reported else None
        return release_lease(self.provider, ctx.state, ctx.lease_id, made, ctx.events, ctx.state_wait)


class KeptLease:
    fresh = False

    def __init__(self, provider, lease: Lease):
        if lease.status != "active":
            raise UsageError(f"lease {lease.id} is {lease.status}, not active")
        self.provider = provider
        self.lease = lease
        self.lease_id = lease.id

    def offer(self, config: Config) -> Offer:
        from ..leases import check_owner
        check_owner(self.lease, "run on it", config.user)   # it would be recorded and billed as its owner's
        return offer_for_lease(self.provider, self.lease)

    def begin(self, ctx: RunContext, first_deadline_s: int, grant: BudgetGrant, pins: PinnedInputs) -> None:
        ctx.state.create_run(ctx.run_id, lease_id=self.lease.id, project=self.lease.project, user=self.lease.user,
                             command=ctx.command, log_path=str(ctx.run_dir / "logs"), output_dir=str(ctx.run_dir),
                             meta={"provider": ctx.offer.provider, "template": ctx.offer.template.name,
                                   "gpus": ctx.offer.gpus, "kept_lease": True},
                             masker=_masker(ctx))

    def acquire(self, ctx: RunContext, deadline_s: int, on_machine: OnMachine) -> Lease:
        return self.lease

    def release(self, ctx: RunContext, lease: Lease | None) -> bool:
        """The lease stays kept (`fleet down` releases it), unless this run was stopped because a
        monthly budget is spent: the kept machines' idle time is billed against that budget too, so
        they end now rather than at the kept deadline, unless another run still uses them. (A run
        stopped by its own budget leaves the lease kept: its idle time is not the run's.)"""
        if lease is None or ctx.stop_reason != "budget" or ctx.budget is None \
                or not ctx.budget.monthly_budget_spent():
            return False
        from ..lost_runs import controller_alive
        try:   # a run whose controller provably died uses nothing any more
            others = [r["id"] for r in ctx.state.list_runs(lease_id=lease.id, limit=50)
                      if r["status"] == "running" and r["id"] != ctx.run_id
                      and controller_alive((r.get("meta") or {}).get("controller")) is not False]
        except Exception as exc:  # noqa: BLE001 — unreadable rows: keep the lease, never skip this run's record
            ctx.events.warn(f"the monthly budget is spent, but kept lease {lease.id} stays up: its runs could not "
                            f"be read ({exc}); `fleet down {lease.id}` ends it")
            return False
        if others:
            ctx.events.warn(f"the monthly budget is spent, but kept lease {lease.id} stays up: run {others[0]} still runs "
                            f"on it (`fleet down {lease.id}` ends it)")
            return False
        ctx.events.warn(f"the monthly budget is spent: releasing kept lease {lease.id} too (its idle time "
                        "is billed against the same budget)")
        released = release_lease(self.provider, ctx.state, lease.id, lease, ctx.events, ctx.state_wait)
        if released:
            _end_dead_runs(ctx, lease)
        return released

    def kept_until(self) -> str | None:
        return to_jsonable(self.lease.keep_until) if self.lease.keep_until else None


def _end_dead_runs(ctx: RunContext, lease: Lease) -> None:
    """What `fleet down` does for runs whose controller died on the lease just released: their open
    segments close now (billed up to the release) and they end `lost`; this run's own close with it."""
    from ..lost_runs import end_runs_of_lease
    from ..money.ledger import Ledger
    try:
        ledger = Ledger(ctx.state.db)
        theirs = [seg for seg in ledger.open_segments(lease.id) if seg.fixed.get("run_id") != ctx.run_id]
        if theirs:   # billed up to the release, never past the machines' own deadline
            status = ctx.state.get_lease(lease.id)
            at = min(ledger.clock(), status.deadline) if status.deadline else ledger.clock()
            for seg in theirs:
                ledger.close([seg], max(at, seg.last_end or seg.start))
        end_runs_of_lease(ctx.state, lease, released_by=f"run {ctx.run_id}'s monthly budget stop", events=ctx.events)
    except Exception as exc:  # noqa: BLE001 — the machines are released; `fleet down --all` finishes the rest
        ctx.events.warn(f"could not close the runs of {lease.id} whose controller is gone: {exc}")


def _watch(ctx: RunContext) -> LeaseWatch:
    """A queueing provider's view of the run: its stop flag, the progress sink, --wait."""
    def on_queue(status: QueueStatus) -> None:
        why = f" ({status.reason})" if status.reason else ""
        ctx.events.phase("queue", f"job {status.job} {status.state.lower()}{why}, waited {status.waited_s:.0f}s")

    return LeaseWatch(cancel=ctx.cancel, on_queue=on_queue, max_wait_s=ctx.options.queue_wait_s,
                      on_lost=lambda message: ctx.request_stop("lost", message),
                      on_suspended=lambda message: _held(ctx, True, "suspended", message),
                      on_resumed=lambda message: _held(ctx, False, "run", message))


def _held(ctx: RunContext, held: bool, phase: str, message: str) -> None:
    """Slurm stopped the lease's machines (or resumed them): its heartbeat does not count them lost
    while no beat can reach them (Heartbeat.hold)."""
    if ctx.heartbeat is not None:       # a fresh lease's (pipeline.py); a kept lease has none
        ctx.heartbeat.hold(held)
    ctx.events.phase(phase, message)


def _partial_lease(ctx: RunContext, machines: list[Machine]) -> Lease:
    now = utcnow()
    offer = ctx.offer
    return Lease(id=ctx.lease_id, provider=offer.provider, template=offer.template.name,
                 machines=sorted(machines, key=lambda m: m.node_rank), created_at=ctx.started_at, deadline=now,
                 max_deadline=now, project=offer.project, user=offer.user, heartbeat_ttl_s=offer.heartbeat_ttl_s)


def resumed_from(ctx: RunContext) -> dict:
    """The run row's link to the run this attempt continues (fleet/state/resumes.py reads it), and
    the checkpoints it starts from: its record names them only once it ends, and until then `snapshot
    rm`/`gc` keep what a live run's row names (records.chain.runs_referencing)."""
    resume = ctx.options.resume
    if resume is None:
        return {}
    return {**({"resumed_from": resume.of_run} if resume.of_run else {}),
            **({"resume_checkpoints": {str(r): sid for r, sid in sorted(resume.snapshots.items())}}
               if resume.snapshots else {})}
