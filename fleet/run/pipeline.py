"""One run as a named sequence of stages, each a function with a typed result (fleet/run/types.py):

    plan     → Offer          the machine mix, chosen once by the provider (offer.py)
    pin      → PinnedInputs   code commit + data snapshots, before any money is spent (inputs.py)
    budget   → BudgetGrant    refuse before spending; reservation; deadline cap (budget.py)
    lease    → Lease          machines recorded and metered as each is made (lease.py)
    ready    → Lease          every machine answers SSH; heartbeat running
    stage    → StagedInputs   pinned snapshots onto every machine (inputs.py)
    setup    → ExecResult     `setup`, once per machine (execute.py); a rerun installs the recorded packages first
    environment → RunEnvironment  image, GPU/driver, OS, Python, packages: once per machine kind (environment.py)
    execute  → ExecResult     the command, per machine or per GPU slot (execute.py)
    collect  → Collected      outputs home (collect.py)
    release  → Released       always, in `finally`, whatever collecting raised (cleanup.py); or --keep (keep.py)
    record   → Cost, RecordRef, RunSummary: ledger closed, run record appended (ending.py, budget.py, record.py)

`fleet up` and `fleet rerun` run all of them on a NewLease; `fleet run LEASE` on a KeptLease, which
skips lease, stage, setup and release. Release is guaranteed by the finally-block here, the run's
signal handlers, and, if this process dies, each machine's watchdog deadline and the reaper.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

from ..clock import SteadyClock
from ..money.budget import utc_clock
from ..config.model import Config
from ..errors import Cancelled, ExitCode, FleetError, InfrastructureError, UsageError, transport_failure
from ..ids import new_run_id
from ..models import Lease, Machine, utcnow
from ..plan import first_deadline_s
from ..remote.pool import SessionPool
from .budget import BudgetGate, RunBudget
from .cleanup import GuardedEvents, Steps, collect_raised, release, settled
from .notices import NoticeWatch
from .context import Events, RunContext, checked_events
from .ending import record_run
from .environment import EnvironmentStage
from .execute import (MachinesLost, ReleasedElsewhere, check_cancel, check_not_released_elsewhere,
                      released_elsewhere)
from .loss_reason import ended_by_provider, overslept
from .heartbeat_state import HeartbeatState
from .inputs import Inputs
from .lease import KeptLease, NewLease
from .machines import (CachesSetup, ConfirmsRendezvous, KeepsCheckpoints, Machines, PreparesRendezvous, SSHMachines,
                       WatchesNotices, WatchesStalls)
from .observers import Observers, RunObserver
from .overlap import Beside
from .signals import StopSignals
from .offer import Quote
from .state_wait import StateWait
from .summary import RunSummary
from .telemetry_fetch import TELEMETRY_INTERVAL_S, TelemetryFetch
from .types import Collected, ExecResult, PinnedInputs, Released, RunOptions

STAGES = ("plan", "pin", "budget", "lease", "ready", "checkpoint", "stage", "setup", "environment", "execute", "collect", "release",
          "record")


@dataclass
class _Outcome:
    """How the run ended, settled as stages finish or fail; frozen into the RunSummary at the end."""

    status: str = "error"
    exit_code: int = ExitCode.INFRASTRUCTURE
    failing_rank: str | None = None
    message: str | None = None
    rank_exit_codes: tuple[tuple[str, int], ...] = ()
    machines_lost: bool = False        # machines vanished under the run (recovery may resume it)


class _SetupFailed(Exception):
    pass


class Pipeline:
    def __init__(self, config: Config, source: NewLease | KeptLease, *, options: RunOptions | None = None,
                 events: Events | None = None, observers: Iterable[RunObserver] = (),
                 machines: Machines | None = None, run_dir_root: Path | None = None, clock=utc_clock,
                 run_dir: Path | None = None, attributed: bool = False):
        """`run_dir`: where this run writes (default run_dir_root/<run-id>); `attributed`: its machine
        time is already metered by another run (a sweep trial on its warm pool, fleet/run/pool_lease.py)."""
        # The run's meter counts on a clock the wall clock's steps do not move (fleet/clock.py).
        self.config, self.source, self.clock = config, source, SteadyClock() if clock is utc_clock else clock
        self.run_dir, self.attributed = run_dir, attributed
        self.options = options or RunOptions()
        self.events = GuardedEvents(checked_events(events))   # a sink that raises cannot stop the release
        self.telemetry = TelemetryFetch()
        self.observers = Observers([self.telemetry])
        if self.options.ci and self.options.report_ci:
            from ..ci import CIReport
            self.observers.add(CIReport(config))
        for observer in observers:
            self.observers.add(observer)
        self.machines = machines or SSHMachines()
        if not isinstance(self.machines, Machines):
            raise TypeError(f"{type(self.machines).__name__} does not implement fleet.run.machines.Machines")
        self.run_dir_root = run_dir_root or config.base_dir / "runs"
        self.inputs = Inputs(config)
        self.environment = EnvironmentStage(self.machines, self.inputs, self.options)

    # -- before any machine exists -----------------------------------------------------------------
    def run(self) -> RunSummary:
        if not self.config.command:
            raise UsageError("no command to run", hint="set `command` in fleet.toml or pass one after `--`")
        from ..warn_sink import warnings_to
        with warnings_to(self.events):   # what is noticed deep inside (FLEET_HOME's mode, …) goes to the run's sink
            return self._run()

    def _run(self) -> RunSummary:
        from ..state import open_state
        offer = self.source.offer(self.config)                                          # plan
        if self.options.confirm is not None and self.source.fresh and not self.options.confirm(
                Quote.of(offer, self.config)):
            raise Cancelled("not started: the plan was declined; nothing was leased or spent")
        handed = getattr(self.source, "pins", None)   # pinned already: a pool's trial, or node 0's handed lease
        pins = (self.inputs.adopt(handed) if handed is not None else                          # pin
                self.inputs.pin(self.options, self.events) if self.source.fresh else self.inputs.adopt(PinnedInputs()))
        state = open_state(self.config.state_url)
        try:   # this run's connection to the state, closed with it (not left to the garbage collector)
            return self._run_with(state, offer, pins)
        finally:
            state.close()

    def _run_with(self, state, offer, pins: PinnedInputs) -> RunSummary:
        run_id, lease_id = self.options.run_id or new_run_id(), self.source.lease_id
        run_dir = self.run_dir or self.run_dir_root / run_id
        grant = BudgetGate(self.config, state, self.clock).grant(offer, run_id=run_id, lease_id=lease_id,
                                                                 kept=not self.source.fresh)   # budget
        plan = offer.to_plan(run_id=run_id, budget_deadline_s=grant.budget_deadline_s,
                             telemetry_interval_s=TELEMETRY_INTERVAL_S)
        ctx = RunContext(config=self.config, offer=offer, plan=plan, run_id=run_id, lease_id=lease_id, state=state,
                         events=self.events, run_dir=run_dir, started_at=utcnow(), options=self.options,
                         command=self.config.command,
                         attempt=self.options.resume.attempt if self.options.resume else 1,
                         state_wait=None)
        ctx.state_wait = StateWait(state.db, self.events, stop=ctx.hurry)   # a second Ctrl-C ends its wait
        self.inputs.stop = ctx.cancel
        if self.options.ci:
            from ..ci import cancel_grace_s, stop_limit_s
            ctx.cancel_grace_s, ctx.stop_limit_s = cancel_grace_s(), stop_limit_s(warn=self.events.warn)
        budget = RunBudget(grant, state, lease_id=lease_id, run_dir=run_dir, clock=self.clock,
                           attributed=self.attributed)
        ctx.budget = budget
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "logs").mkdir(exist_ok=True)
        with StopSignals(ctx):
            return self._run_on_machines(ctx, budget, pins)

    def _first_deadline(self, ctx: RunContext, budget: RunBudget) -> int:
        """The machines' first deadline, already capped by the budget before any heartbeat."""
        first = first_deadline_s(ctx.plan)
        cap = budget.deadline_cap_s(ctx)
        return first if cap is None else max(1, min(first, int(cap)))

    # -- machines ------------------------------------------------------------------------------------
    def _run_on_machines(self, ctx: RunContext, budget: RunBudget, pins: PinnedInputs) -> RunSummary:
        source, machines, observers = self.source, self.machines, self.observers
        first_deadline = self._first_deadline(ctx, budget)
        source.begin(ctx, first_deadline, budget.grant, pins)
        outcome = _Outcome()
        lease: Lease | None = None
        heartbeat = None
        connections = None
        collected: Collected | None = None
        error: BaseException | None = None

        def on_machine(machine: Machine) -> None:
            budget.open_machine(ctx, machine)
            observers.machine(ctx, machine)

        checkpoints: list = []   # the Checkpointer, once the machines are ready
        early: list[Collected] = []   # the outputs, fetched beside the last checkpoint upload
        notices: NoticeWatch | None = None

        def on_tick() -> None:
            budget.tick(ctx)
            observers.tick(ctx)
            for checkpointer in checkpoints:
                checkpointer.tick()

        try:
            check_cancel(ctx)   # a stop asked for before now leases nothing (only some providers stop mid-lease)
            lease = source.acquire(ctx, first_deadline, on_machine)                      # lease
            ctx.lease = lease
            # One SSH connection per machine for everything below, each phase a channel on it.
            connections = SessionPool(lease.machines).open()
            budget.start(ctx, lease, since=None if source.fresh else self.clock(), kept=not source.fresh)
            observers.lease(ctx, lease)
            if source.fresh:
                from ..heartbeat import deadline_publisher
                beat_state = HeartbeatState(ctx, lambda: budget.deadline_cap_s(ctx))
                heartbeat = machines.heartbeat(lease, ctx.offer.heartbeat_ttl_s, caps=[beat_state.cap],
                                               on_deadline=lambda d: (budget.machines_held_until(d),
                                                                      beat_state.record_deadline(d)),
                                               warn=ctx.events.warn,
                                               publish=deadline_publisher(source.provider, lease))
                ctx.machines_lost, ctx.heartbeat = heartbeat.lost, heartbeat
                if isinstance(heartbeat, WatchesStalls):
                    heartbeat.watch_stalls()
            check_cancel(ctx)
            ctx.events.phase("ready", f"waiting for SSH on {len(lease.machines)} machine(s)")   # ready
            machines.wait_ready(ctx, lease.machines)
            observers.ready(ctx, lease)
            check_cancel(ctx)
            if isinstance(machines, WatchesNotices):   # spot reclaim notices stop the run
                notices = machines.watch_notices(ctx, lease, source.provider)
            with Beside() as beside:   # what staging need not wait for, beside it (all joined here)
                if heartbeat is not None:
                    beside.run(lambda: (heartbeat.beat(), heartbeat.start()), "first-beat")
                if isinstance(machines, PreparesRendezvous):
                    beside.run(lambda: machines.prepare_rendezvous(ctx, lease), "rendezvous")
                if isinstance(machines, KeepsCheckpoints):                                 # checkpoint
                    beside.run(lambda: checkpoints.append(machines.begin_checkpoints(
                        ctx, lease, self.inputs.checkpoint_store())), "checkpoints")
                if source.fresh:
                    ctx.events.phase("stage", "copying inputs to machines")                 # stage
                    machines.stage(self.inputs, lease, ctx.events)
            check_cancel(ctx)
            if source.fresh:
                if self.config.setup:                                                      # setup
                    ctx.events.phase("setup", self.config.setup)
                    setup = self.environment.setup_command(ctx, lease, self.config.setup)
                    skipped = (machines.setup_skip_reason(ctx, lease, setup)
                               if isinstance(machines, CachesSetup) else None)
                    if skipped:
                        ctx.events.phase("setup", skipped)
                    else:
                        result = machines.execute(ctx, lease, setup, setup=True, on_tick=on_tick)
                        # A setup we stopped (Ctrl-C, budget) exits 143/137: that is the stop, not a broken setup.
                        check_cancel(ctx)
                        check_not_released_elsewhere(ctx)
                        if result.exit_code != 0:
                            outcome = _Outcome("setup-failed", result.exit_code, result.failing_rank)
                            raise _SetupFailed()
            with Beside() as beside:   # the port still free on node 0's host (or another), off the path
                if isinstance(machines, ConfirmsRendezvous):
                    beside.run(lambda: machines.confirm_rendezvous(ctx, lease), "rendezvous-check")
                self.environment.capture(ctx, lease)                                       # environment
            check_cancel(ctx)
            ctx.events.phase("run", ctx.command)                                           # execute
            result = machines.execute(ctx, lease, ctx.command, on_tick=on_tick)
            self.events.shield()   # the command has ended: what is left (collect, release) a sink cannot stop
            if checkpoints and not ctx.hurry.is_set():   # written as the command ended (or on SIGTERM)
                with Beside() as beside:   # the outputs come home meanwhile: a round trip each, not in turn
                    beside.run(lambda: early.append(machines.collect(ctx, lease)), "collect")
                    ctx.checkpoints = checkpoints[0].finish(skip=ctx.lost_machines)
            if not ctx.stop_reason:
                if result.exit_code != 0:      # a command that finished is recorded as it ended
                    check_not_released_elsewhere(ctx)
                taken = ended_by_provider(ctx, getattr(source, "provider", None), lease, result.exit_code)
                if taken:
                    raise MachinesLost(f"rank {result.failing_rank} ended by a signal: {taken}",
                                       failing=result.failing_rank)
            outcome = _ended(ctx, result)
        except _SetupFailed:
            pass
        except MachinesLost as exc:   # the machines' failure, not the experiment's: a summary, not a raise
            outcome = _Outcome("error", exc.exit_code, exc.failing, exc.one_line(),
                               machines_lost=not isinstance(exc, ReleasedElsewhere))   # `fleet down`: never resumed
        except FleetError as exc:
            error = exc
            if ctx.stop_reason == "budget":   # the budget ran out before the run phase (e.g. while staging)
                outcome = _Outcome("budget-stopped", ExitCode.BUDGET_STOPPED, message=ctx.stop_message)
                error = None
            elif ctx.stop_reason == "lost":   # the provider took the machines away (e.g. Slurm NODE_FAIL)
                outcome = _Outcome("error", ExitCode.INFRASTRUCTURE, message=ctx.stop_message, machines_lost=True)
            elif isinstance(exc, Cancelled) or ctx.stop_reason == "cancelled":
                outcome = _Outcome("cancelled", ExitCode.CANCELLED, message=ctx.stop_message or str(exc))
            elif isinstance(exc, InfrastructureError) and (elsewhere := released_elsewhere(ctx)) is not None:
                # e.g. staging cut off by `fleet down`: the machines went because the user ended the run
                outcome, error = _Outcome("error", elsewhere.exit_code, message=elsewhere.one_line()), None
            else:
                outcome = _Outcome("error", exc.exit_code, message=exc.one_line())
        except BaseException as exc:
            error = exc
            outcome = _Outcome("error", 1, message=f"{type(exc).__name__}: {exc}")
            if (link := transport_failure(exc)) is not None:   # e.g. paramiko's "Channel closed." while staging
                link.__cause__ = exc   # --debug shows where the link failed
                outcome, error = _Outcome("error", link.exit_code, message=link.one_line()), link
                if (elsewhere := released_elsewhere(ctx)) is not None:   # because `fleet down` took the machines
                    outcome, error = _Outcome("error", elsewhere.exit_code, message=elsewhere.one_line()), None
        finally:   # each step runs whatever the ones before it raised (cleanup.py)
            self.events.shield()
            steps = Steps()
            outcome = steps.run(lambda: settled(ctx, source, lease, outcome), default=outcome)
            why = overslept(ctx) if isinstance(error, InfrastructureError) else None
            if why and outcome.message == why:   # the line to show: not SSH's fault, nor the network's
                error = _with_cause(InfrastructureError(why), error)
            if notices is not None:
                steps.run(notices.stop)
            if lease is not None:
                collected = steps.run(lambda: early[0] if early else machines.collect(ctx, lease),   # collect
                                      failed=collect_raised)
            # fleet's own fetcher: it would dial released machines (whose addresses a cloud may
            # have handed on) for as long as the end takes; what it fetched is read from files.
            steps.run(self.telemetry.stop)
            if heartbeat is not None:
                steps.run(heartbeat.stop)
            released = steps.run(lambda: release(ctx, source, machines, lease, outcome.status, self.options.keep_s),
                                 default=Released(released=False))                       # release
            if connections is not None:   # after release: --keep extends the deadline over them
                steps.run(connections.close)
            summary = steps.run(lambda: record_run(ctx, budget, pins, lease, outcome, collected, released,  # record
                                                   inputs=self.inputs, environment=self.environment,
                                                   fresh=self.source.fresh))
            if summary is not None:   # after the state is final: an observer's KeyboardInterrupt leaves no run `running`
                steps.run(lambda: self.observers.finish(ctx, summary))
        if error is not None and (summary is None or not isinstance(error, Exception) or summary.status == "error"):
            raise error   # KeyboardInterrupt/SystemExit after cleanup; or the error that ended the run
        steps.raise_first()
        if self.events.error is not None:   # the caller's sink raised: after the release and the record
            raise self.events.error
        return summary


def _with_cause(error: BaseException, cause: BaseException) -> BaseException:
    error.__cause__ = cause   # --debug shows what failed first
    return error


def _ended(ctx: RunContext, result: ExecResult) -> _Outcome:
    if ctx.stop_reason == "budget":
        return _Outcome("budget-stopped", ExitCode.BUDGET_STOPPED, message=ctx.stop_message)
    if ctx.stop_reason == "lost":
        return _Outcome("error", ExitCode.INFRASTRUCTURE, message=ctx.stop_message, machines_lost=True)
    if ctx.stop_reason:
        return _Outcome("cancelled", ExitCode.CANCELLED, message=ctx.stop_message)
    return _Outcome("succeeded" if result.exit_code == 0 else "failed", result.exit_code, result.failing_rank,
                    rank_exit_codes=result.rank_exit_codes)


# -- the three ways in ------------------------------------------------------------------------------

def up(config: Config, *, keep_s: int | float | str | None = None, events: Events | None = None,
       observers: Iterable[RunObserver] = (), options: RunOptions | None = None, run_dir_root: Path | None = None,
       provider=None, machines: Machines | None = None) -> RunSummary:
    """Lease, run `config.command` everywhere, bring outputs home, release. Returns the RunSummary,
    whose `exit_code` is the experiment's (first failing rank), or one of fleet's codes."""
    from ..arguments import run_args
    from .offer import provider_for
    run_args(config, observers, options)
    options = options or RunOptions()
    if keep_s is not None:
        options = replace(options, keep_s=keep_s)
    if not config.command:
        raise UsageError("no command to run", hint="set `command` in fleet.toml or pass one after `--`")
    source = NewLease(provider if provider is not None else provider_for(config))
    return Pipeline(config, source, options=options, events=events, observers=observers, machines=machines,
                    run_dir_root=run_dir_root).run()


def run_on_lease(lease_id: str, command: str | list[str], *, config: Config | None = None, events: Events | None = None,
                 observers: Iterable[RunObserver] = (), state=None, provider=None,
                 machines: Machines | None = None) -> RunSummary:
    """Run a command on a kept lease's machines: budgeted, metered and recorded like `fleet up`,
    without leasing or releasing (the lease stays kept until its deadline or `fleet down`)."""
    from ..arguments import command_arg, name_arg, run_args, state_arg
    from ..state import open_state
    from .offer import provider_for
    lease_id, command = name_arg("lease_id", lease_id), command_arg(command)
    run_args(config, observers, None, config_optional=True)
    base = config or Config(path=None, base_dir=Path.cwd(), project="default", name="default", command=command)
    store = state_arg(state) if state is not None else open_state(base.state_url)
    try:
        lease = store.get_lease(lease_id)
    finally:
        if state is None:   # opened here: closed here
            store.close()
    config = replace(base, command=command, provider=lease.provider, template=lease.template, project=lease.project,
                     setup=None)
    kept = KeptLease(provider if provider is not None else provider_for(config), lease)
    return Pipeline(config, kept, events=events, observers=observers, machines=machines,
                    run_dir_root=Path.cwd() / "runs").run()
