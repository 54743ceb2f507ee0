"""The warm pool: a sweep is one run of the pipeline whose "execute" stage runs every trial.

    plan → pin → budget → lease → ready → stage → setup      once, for the whole sweep
    execute  = the scheduler: trial after trial on slots of the lease (each trial itself a run of
               the pipeline on a PoolLease: own run id, record, outputs in runs/<sweep-id>/<trial>/)
    collect → release → record                                once, when the queue is empty

So boot and setup are paid once per machine and data staging once per host (machines sharing a
host's chunk cache: the first is sent the chunks, the others are built from it), the pool's
release is guaranteed by the pipeline's finally-block, signal handlers and each machine's watchdog
like any run's, and the sweep's budget is the pool run's budget: metered over the whole lease
(the only ledger rows; a trial's cost is its attributed share), capping the machines' deadlines,
stopping running trials at the crossing, and read by the scheduler before each trial starts.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from ..config.model import Config
from ..errors import ExitCode
from ..models import Lease
from ..run.context import Events, RunContext, checked_events
from ..run.inputs import Inputs
from ..run.keep import release_lease
from ..run.lease import NewLease
from ..run.machines import SSHMachines
from ..run.types import ExecResult, RunOptions, StagedInputs
from .bytecode import precompile_all
from .scheduler import Scheduler
from .slots import machines_for, slots_of, with_ports
from .spec import SweepSpec, new_sweep_id
from .summary import SweepSummary
from .trial_env import TrialEnvironments, read_state


class PoolMachines(SSHMachines):
    """The pipeline's Machines for the pool run: everything as for any run, except that the
    command stage hands the leased machines to the sweep's scheduler."""

    def __init__(self, spec: SweepSpec, config: Config, provider, events: Events, sweep_dir: Path):
        self.spec, self.config, self.provider, self.events, self.sweep_dir = spec, config, provider, events, sweep_dir
        self.staged: StagedInputs | None = None
        self.scheduler: Scheduler | None = None
        self.inputs: Inputs | None = None
        self.leased = 0                   # machines the pool leased (some may be given back early)
        self.environments = TrialEnvironments()   # what the trials' records reuse (trial_env.py)

    def stage(self, inputs, lease, events) -> StagedInputs:
        self.inputs = inputs
        self.staged = super().stage(inputs, lease, events)
        return self.staged

    def capture_environment(self, ctx, lease, store, pinned):
        """The pool's own probe, and beside it each machine's environment state (nothing of the
        experiment runs between the two), remembered for the trials."""
        from concurrent.futures import ThreadPoolExecutor

        from ..lease_prepare import prepare_lease
        from ..parallel import parallel, submit_or_thread
        prepare_lease(ctx, lease)     # the venvs whose state is read (idempotent, as in capture)
        # Before the state is read: from here on no import writes byte code (bytecode.py), so the
        # resets can count what a trial leaves in __pycache__ as the trial's doing.
        precompile_all(ctx, lease)
        with ThreadPoolExecutor(1, thread_name_prefix="fleet-env-state") as pool:
            # submit_or_thread: a run in a worker thread whose main thread ended reads them all the same
            reading = submit_or_thread(pool, parallel, lease.machines, lambda m: read_state(lease, m))
            env = super().capture_environment(ctx, lease, store, pinned)
            states = reading.result()
        for m, got in zip(lease.machines, states):
            self.environments.saw(m.id, got.env)
            self.environments.code[m.id] = got.code
            self.environments.site[m.id] = got.site
            self.environments.agent[m.id] = got.agent
        self.environments.learn(lease, env, {m.id: got.env for m, got in zip(lease.machines, states)})
        return env

    def execute(self, ctx: RunContext, lease: Lease, command: str, *, setup: bool = False,
                on_tick=None) -> ExecResult:
        if setup:
            return super().execute(ctx, lease, command, setup=True, on_tick=on_tick)
        from ..lease_prepare import prepare_lease
        prepare_lease(ctx, lease)   # once, before the first trial: every trial shares the pool's venvs
        self.leased = len(lease.machines)
        pins = self.inputs.pins if self.inputs is not None else None
        from ..run.types import PinnedInputs
        self.scheduler = Scheduler(self.spec, provider=self.provider, config=self.config,
                                   pins=pins or PinnedInputs(), events=self.events, sweep_dir=self.sweep_dir,
                                   environments=self.environments, on_progress=lambda: self.progress(ctx, lease))
        slots = with_ports(slots_of(lease, self.spec.gpus_per_trial, self.spec.parallel), lease, ctx.state)
        return self.scheduler.run(ctx, slots, on_tick)

    def progress(self, ctx: RunContext, lease: Lease) -> None:
        """sweep.json so far, as trials end: a controller killed mid-sweep (SIGKILL, the host gone)
        writes no summary at its end, and `fleet runs compare --sweep` then found no sweep, though
        the trials that ended are recorded runs."""
        trials = self.scheduler.ordered_results("not ended when this was written (running or queued)")
        summary = SweepSummary(sweep_id=self.spec.sweep_id, status="running", exit_code=-1, command=self.spec.command,
                               trials=trials, pool_run_id=ctx.run_id, lease_id=lease.id, leases=1,
                               machines=self.leased, budget_usd=str(self.spec.budget) if self.spec.budget else None,
                               run_dir=str(self.sweep_dir), message="the sweep is running, or its controller "
                               "ended without writing its summary (see `fleet status`)")
        try:
            _redacted(summary, self.config).write(self.sweep_dir)
        except Exception as exc:  # noqa: BLE001 — a full disk here must not stop the trials; the end writes it again
            self.events.warn(f"could not write {self.sweep_dir / 'sweep.json'} so far: {exc}")

    def collect(self, ctx, lease):
        from ..run.types import Collected
        return Collected(files=0)   # each trial brought its own outputs home

    def begin_checkpoints(self, ctx, lease, store):
        """None for the pool run itself: no process ever runs under its run id (each trial makes and
        uploads its own FLEET_CHECKPOINT_DIR), so there is no directory to make or upload."""
        from ..run.checkpoints import Checkpointer
        return Checkpointer(replace(lease, machines=[]), store, ctx.run_id, 0, ctx.events.warn)


class PoolRelease(NewLease):
    """The pool's lease: as any new lease, except that its release does not wait, machine after
    machine, for a slot's early release (shrink.py) still under way when the last trial ended: the
    machines still up are ended beside it, and the provider's whole-lease release follows once both
    are done (so no machine is ended twice)."""

    def __init__(self, provider, machines: PoolMachines):
        super().__init__(provider)
        self.pool = machines

    def release(self, ctx: RunContext, lease: Lease | None) -> bool:
        shrink = self.pool.scheduler.shrink if self.pool.scheduler is not None else None
        leaving = shrink.leaving() if shrink is not None else set()
        if lease is None or shrink is None or not leaving:
            if shrink is not None:
                shrink.join()
            return super().release(ctx, lease)
        rest = [m.id for m in lease.machines if m.id not in leaving]
        ctx.events.phase("release", f"destroying {len(rest)} machine(s)")

        def end_rest() -> None:
            try:
                self.provider.release_machines(lease, rest)
            except Exception as exc:  # noqa: BLE001 — the whole-lease release below tries them again
                ctx.events.warn(f"could not release {', '.join(rest)} beside the early release ({exc}); "
                                "retrying with the whole lease")
        from threading import Thread
        ending = Thread(target=end_rest, name="pool-release", daemon=True)
        if rest:
            ending.start()
        shrink.join()
        if rest:
            ending.join()
        return release_lease(self.provider, ctx.state, ctx.lease_id, lease, ctx.events, ctx.state_wait)


def pool_config(config: Config, spec: SweepSpec, provider) -> Config:
    """The pool's run: enough machines for `parallel` slots, the sweep's budget, a description as
    its command (recorded; the trials' commands are their own)."""
    from ..run.offer import template_for
    template = template_for(provider, config)
    per_machine = max(1, template.gpus_per_machine)
    slots = max(1, min(spec.parallel, len(spec.trials)))   # never machines no trial would use
    return replace(config, gpus=machines_for(slots, spec.gpus_per_trial, per_machine) * per_machine,
                   budget=spec.budget,
                   command=f"fleet sweep {spec.sweep_id}: {len(spec.trials)} trial(s) of {spec.command}")


def sweep(config: Config, spec: SweepSpec, *, events: Events | None = None, provider=None,
          run_dir_root: Path | None = None, options: RunOptions | None = None) -> SweepSummary:
    """Lease the pool once, run every trial on it, release it; the summary lists every trial."""
    from ..run.offer import provider_for
    from ..run.pipeline import Pipeline
    events = checked_events(events)
    spec = spec if spec.sweep_id else replace(spec, sweep_id=new_sweep_id())
    if spec.budget is None and config.budget is not None:
        # fleet.toml's `budget` caps the pool as it caps any run: a sweep without a budget of its own
        # ran unbounded where the same fleet.toml stopped `fleet up` at its budget.
        spec = replace(spec, budget=config.budget)
    spec.check()
    provider = provider if provider is not None else provider_for(config)
    sweep_dir = (run_dir_root or config.base_dir / "runs") / spec.sweep_id
    pool_cfg = pool_config(config, spec, provider)
    machines = PoolMachines(spec, config, provider, events, sweep_dir)
    started = time.monotonic()
    events.phase("sweep", f"{spec.sweep_id}: {len(spec.trials)} trial(s), {min(spec.parallel, len(spec.trials))} at once")
    ci = options is not None and options.ci
    summary = Pipeline(pool_cfg, PoolRelease(provider, machines), events=events, machines=machines,
                       options=replace(options, report_ci=False) if ci else options, run_dir=sweep_dir / "pool").run()
    # The pool has ended and released: a stop signal now (a runner's second one) would only cut
    # sweep.json and the CI report's scrub short, the trials' files keeping their secrets.
    import threading
    from ..run.signals import BetweenAttempts
    with BetweenAttempts(threading.Event()):
        return _summarise(config, spec, summary, machines, sweep_dir, started, ci, events)


def _summarise(config: Config, spec: SweepSpec, summary, machines: "PoolMachines", sweep_dir: Path, started: float,
               ci: bool, events: Events) -> SweepSummary:
    trials = machines.scheduler.ordered_results() if machines.scheduler is not None else ()
    if not trials:
        from .summary import TrialResult
        trials = tuple(TrialResult(trial=t.name, index=t.index, params=t.values, state="not-started",
                                   reason=summary.message or f"the pool run ended {summary.status}")
                       for t in spec.trials)
    status, code = _verdict(summary.status, summary.exit_code, trials)
    out = SweepSummary(
        sweep_id=spec.sweep_id, status=status, exit_code=code, command=spec.command, trials=trials,
        pool_run_id=summary.run_id, lease_id=summary.lease_id, leases=1, machines=machines.leased or summary.machines,
        staged_bytes=machines.staged.bytes_sent if machines.staged is not None else None,
        budget_usd=str(spec.budget) if spec.budget is not None else None, cost_usd=summary.cost_usd,
        would_cost_usd=summary.would_cost_usd, duration_s=round(time.monotonic() - started, 3),
        run_dir=str(sweep_dir), message=summary.message or summary.budget_stop,
        released_early=dict(machines.scheduler.shrink.released) if machines.scheduler is not None else {})
    out = _redacted(out, config)
    out.write(sweep_dir)
    if ci:
        from .ci_report import report_sweep
        try:
            report_sweep(out, config)
        except Exception as exc:  # noqa: BLE001 — as fleet up's: a report problem must not hide the sweep's result
            events.warn(f"could not write the CI summary: {type(exc).__name__}: {exc}")
    return out


def _redacted(summary: SweepSummary, config: Config) -> SweepSummary:
    """Secret values out of sweep.json and what the CLI prints (a shell may have expanded one into
    the command, or a parameter's value holds one), as the runs' own summaries are."""
    from ..masking import Masker
    redact = Masker.for_config(config).redacting()
    if not redact:
        return summary
    trials = tuple(replace(t, params=redact.mask_obj(t.params), reason=redact(t.reason) if t.reason else t.reason)
                   for t in summary.trials)
    return replace(summary, command=redact(summary.command), trials=trials,
                   message=redact(summary.message) if summary.message else summary.message)


def _verdict(pool_status: str, pool_exit: int, trials) -> tuple[str, int]:
    """The sweep's status and exit code: cancelled 130, budget 11, the pool's own failure (lease,
    setup, lost machines) its code, `incomplete` 1 when trials were left unstarted for another
    reason, else 1 when any trial did not succeed, 0 when all did."""
    states = {t.state for t in trials}
    if pool_status == "setup-failed":
        return "setup-failed", pool_exit or 1
    if pool_status == "cancelled":
        return "cancelled", int(ExitCode.CANCELLED)
    if pool_status == "budget-stopped" or any(t.state == "not-started" and t.reason and "budget" in t.reason
                                              for t in trials):
        return "budget-stopped", int(ExitCode.BUDGET_STOPPED)
    if pool_status == "error":
        return "error", int(ExitCode.INFRASTRUCTURE)
    if "not-started" in states:
        return "incomplete", 1
    if states & {"failed", "error", "stopped"}:
        return "completed", 1
    return "completed", 0
