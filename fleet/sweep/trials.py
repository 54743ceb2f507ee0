"""One trial on its slot of the warm pool: the run pipeline on a PoolLease, watched for its timeout
and for the sweep's stop, then the machines reset for the next trial.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import FleetError
from ..models import Lease
from ..run.context import Events, RunContext
from ..run.observers import RunObserver
from ..run.types import PinnedInputs, RunOptions
from .bytecode import TRIAL_ENV
from .params import Trial
from .slots import Slot
from .stopping import POLL_S, StopRule, read_remote_metrics
from .summary import TrialResult
from ..run.metrics import read_metrics



class TrialEvents:
    """The sweep's progress sink, each line naming its trial (several run at once)."""

    def __init__(self, events: Events, trial: str):
        self.events, self.trial = events, trial

    def phase(self, name: str, detail: str = "") -> None:
        if name in ("run", "collect"):
            self.events.phase(name, f"{self.trial}: {detail}")

    def log(self, label: str, stream: str, line: str) -> None:
        self.events.log(f"{self.trial}/{label}", stream, line)

    def warn(self, message: str) -> None:
        self.events.warn(f"{self.trial}: {message}")


@dataclass
class TrialWatch(RunObserver):
    """Stops the trial at its timeout, or when the sweep stops (budget, Ctrl-C): the trial's own
    execute loop then ends its processes gracefully and brings its outputs home."""

    timeout_s: float | None
    sweep_stop: "SweepStop"
    stop_rule: StopRule | None = None
    ctx: RunContext | None = None
    started: float = field(default_factory=time.monotonic)
    timed_out: bool = False
    early_stop: str | None = None      # why --stop-if ended it
    next_poll: float = 0.0

    def on_lease(self, ctx: RunContext, lease: Lease) -> None:
        self.ctx, self.started = ctx, time.monotonic()
        self.sweep_stop.follow(ctx)

    def on_tick(self, ctx: RunContext) -> None:
        now = time.monotonic()
        if self.timeout_s is not None and not ctx.cancel.is_set() and now - self.started > self.timeout_s:
            self.timed_out = True
            ctx.request_stop("timeout", f"trial timeout ({self.timeout_s:g}s) reached")
        if self.stop_rule is not None and not ctx.cancel.is_set() and ctx.lease is not None and now >= self.next_poll:
            self.next_poll = now + POLL_S
            node0 = min(ctx.lease.machines, key=lambda m: m.node_rank)
            why = self.stop_rule.verdict(read_remote_metrics(node0, ctx.run_id))
            if why is not None:
                self.early_stop = why
                ctx.request_stop("early-stop", why)

    def on_finish(self, ctx, summary) -> None:
        self.sweep_stop.unfollow(ctx)


class SweepStop:
    """The sweep's stop, passed on to every running trial (and to a trial that starts after it)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reason: str | None = None
        self.message = ""
        self.hurry = False
        self.running: list[RunContext] = []

    def follow(self, ctx: RunContext) -> None:
        with self.lock:
            self.running.append(ctx)
            self._pass_on(ctx)

    def unfollow(self, ctx: RunContext) -> None:
        with self.lock:
            if ctx in self.running:
                self.running.remove(ctx)

    def stop(self, reason: str, message: str, *, hurry: bool = False) -> None:
        with self.lock:
            if self.reason is None:
                self.reason, self.message = reason, message
            self.hurry = self.hurry or hurry
            for ctx in self.running:
                self._pass_on(ctx)

    def _pass_on(self, ctx: RunContext) -> None:
        if self.reason is not None:
            ctx.request_stop(self.reason, self.message)
        if self.hurry:
            ctx.hurry.set()


def state_of(status: str, watch: TrialWatch) -> tuple[str, str | None]:
    """The sweep's word for how a trial run ended, and why (for the stopped ones)."""
    if status == "succeeded":
        return "succeeded", None
    if status in ("failed", "setup-failed"):
        return "failed", None
    if status == "budget-stopped":
        return "stopped", "the sweep budget ran out while it ran"
    if status == "cancelled":
        if watch.early_stop:
            return "stopped", watch.early_stop
        if watch.timed_out:
            return "stopped", f"trial timeout ({watch.timeout_s:g}s) reached"
        return "stopped", watch.sweep_stop.message or "cancelled"
    return "error", None


def run_trial(*, config, provider, lease: Lease, slot: Slot, pins: PinnedInputs, trial: Trial,
              command: str, sweep_id: str, pool_run_id: str, run_dir: Path, timeout_s: float | None,
              sweep_stop: SweepStop, events: Events, stop_rule: StopRule | None = None,
              machines=None) -> TrialResult:
    """The trial as a run of the pipeline on its machines of the pool; never raises. `machines`:
    the pipeline's Machines (the scheduler's TrialMachines: the environment the pool remembers)."""
    from ..run.pipeline import Pipeline
    from ..run.pool_lease import PoolLease, sub_lease
    # Money is the pool run's: it meters the whole lease against the sweep's budget and the monthly
    # ones (and holds their reservation), so a trial neither reserves nor checks them again.
    # TRIAL_ENV: no import writes byte code, so what a trial leaves in __pycache__ is its own (bytecode.py).
    trial_config = replace(config, command=command, setup=None, env={**config.env, **trial.env(), **TRIAL_ENV},
                           budget=None,
                           budgets=replace(config.budgets, project_monthly=None, user_monthly=None))
    watch = TrialWatch(timeout_s, sweep_stop, stop_rule)
    source = PoolLease(provider, sub_lease(lease, list(slot.machine_ids), slot.gpus, slot.port), pins,
                       sweep_id=sweep_id, trial=trial.name, pool_run_id=pool_run_id)
    from ..ids import new_run_id
    # Named here, not by the pipeline: a trial whose run raises (its machines gone) keeps its run
    # id, so the scheduler resets (or retires) exactly the machines that run used.
    run_id = new_run_id()
    base = TrialResult(trial=trial.name, index=trial.index, params=trial.values, state="error", run_id=run_id,
                       machines=slot.machine_ids, gpus=slot.gpus, run_dir=str(run_dir))
    try:
        summary = Pipeline(trial_config, source, events=TrialEvents(events, trial.name), observers=[watch],
                           options=RunOptions(trial_leaf=slot.leaf, run_id=run_id), run_dir=run_dir, attributed=True,
                           machines=machines).run()
    except FleetError as exc:
        return replace(base, reason=exc.one_line())
    except Exception as exc:  # noqa: BLE001 — one trial's failure never stops the others
        return replace(base, reason=f"{type(exc).__name__}: {exc}")
    state, why = state_of(summary.status, watch)
    return replace(base, state=state, run_id=summary.run_id, status=summary.status, exit_code=summary.exit_code,
                   duration_s=summary.duration_s, cost_usd=summary.cost_usd or summary.would_cost_usd,
                   reason=why or summary.message, metrics=read_metrics(run_dir))
