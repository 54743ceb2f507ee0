"""Orchestration of one run: plan → lease → ready → stage → setup → run → collect → release.

Only the flow lives here; each arrow is another module's job. Release is guaranteed by the
finally-block here, by the signal handlers installed for the run, and — if this process dies — by
each machine's own watchdog deadline (see fleet/heartbeat.py), and `fleet down --all` / the reaper.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

from .config_model import Config
from .errors import Cancelled, ExitCode, FleetError, InfrastructureError, UsageError
from .heartbeat import Heartbeat, deadline_publisher
from .ids import new_lease_id, new_run_id
from .models import Lease, Machine, to_jsonable, utcnow
from .plan import current_user, first_deadline_s, make_plan
from .run_context import Events, RunContext, SilentEvents, call_hooks

READY_TIMEOUT_S = 120.0
GRACE_S = 10.0
KEEPABLE = ("succeeded", "failed", "setup-failed")


def _env_seconds(name: str, default: float) -> float:
    """A duration override from the environment; unset, empty or not a number: the default."""
    try:
        return float(os.environ.get(name, "") or default)
    except ValueError:
        return default


def _ready_timeout_s() -> float:
    """Seconds to wait for SSH on a new machine (FLEET_READY_TIMEOUT overrides)."""
    return _env_seconds("FLEET_READY_TIMEOUT", READY_TIMEOUT_S)


def grace_s() -> float:
    """Seconds a stopped experiment gets between SIGTERM and SIGKILL (FLEET_GRACE overrides)."""
    return _env_seconds("FLEET_GRACE", GRACE_S)


def default_hooks(config: Config) -> list:
    """The concerns that plug into every run (budgets, pinned inputs, CI); imported lazily.

    No ImportError guard: a broken budget module must fail the run, not silently drop budgets."""
    from .budget_hook import BudgetHook
    from .ci import CIHook
    from .snapshots.hook import SnapshotHook
    hooks: list = [BudgetHook(config), SnapshotHook(config)]
    # CI last: its after_run reports what the others added (cost, record).
    hooks.append(CIHook(config))
    return hooks


def provider_for(config: Config):
    from .providers import get_provider
    options: dict[str, Any] = {}
    if config.provider == "local" and config.python:
        options["python"] = config.python
    if config.provider in ("ssh", "aws"):
        options["config"] = config
    return get_provider(config.provider, **options)


def template_for(provider, config: Config):
    templates = provider.templates()
    if config.template not in templates:
        choices = ", ".join(sorted(templates)) or "none"
        raise UsageError(f"template {config.template!r} is not offered by the {provider.name} provider",
                         hint=f"choose one of: {choices}")
    return templates[config.template]


class _Signals:
    """First Ctrl-C/SIGTERM: stop gracefully. Second: skip graceful waits (release still happens)."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.previous: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame):
        # Only flags here: the main thread may hold an output lock when the signal lands, so any
        # printing from the handler could deadlock. The run loop reports what happened.
        if self.ctx.cancel.is_set():
            self.ctx.hurry.set()
            return
        self.ctx.request_stop("cancelled", f"received {signal.Signals(signum).name}")

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def parallel(items: list, fn, max_workers: int = 16) -> list:
    """Run fn over items in a bounded pool; raise the first error after all finished."""
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(max_workers, len(items))) as pool:
        futures = [pool.submit(fn, item) for item in items]
        results, errors = [], []
        for fut in futures:
            try:
                results.append(fut.result())
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
    if errors:
        raise errors[0]
    return results


def up(config: Config, *, keep_s: int | None = None, events: Events | None = None, hooks: list | None = None,
       run_dir_root: Path | None = None) -> dict:
    """Lease, run `config.command` everywhere, bring outputs home, release. Returns the run summary.

    The summary's `exit_code` is the experiment's (first failing rank), or one of fleet's codes.
    """
    from .state import open_state

    events = events or SilentEvents()
    hooks = default_hooks(config) if hooks is None else hooks
    if not config.command:
        raise UsageError("no command to run", hint="set `command` in fleet.toml or pass one after `--`")
    provider = provider_for(config)
    template = template_for(provider, config)
    user = current_user(config.user)
    plan = make_plan(provider=config.provider, template=template, gpus=config.gpus,
                     max_duration_s=config.max_duration_s, heartbeat_ttl_s=config.heartbeat_ttl_s,
                     project=config.project, user=user, budget=config.budget)
    from .providers.base import check_machine_count
    check_machine_count(provider, plan)   # before anything is recorded: 10**20 machines is a typo
    state = open_state(config.state_url)
    run_id, lease_id = new_run_id(), new_lease_id()
    run_dir = (run_dir_root or config.base_dir / "runs") / run_id
    ctx = RunContext(config=config, plan=plan, run_id=run_id, lease_id=lease_id, state=state, events=events,
                     run_dir=run_dir, started_at=utcnow(), command=config.command)
    call_hooks(hooks, "before_lease", ctx)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "logs").mkdir(exist_ok=True)
    with _Signals(ctx):
        return _run_leased(ctx, provider, hooks, keep_s)


def _run_leased(ctx: RunContext, provider, hooks: list, keep_s: int | None) -> dict:
    plan, events, state = ctx.plan, ctx.events, ctx.state
    simulated = " (simulated GPUs)" if plan.template.simulated_gpus else ""
    events.phase("lease", f"{plan.machine_count} × {plan.template.name} = {plan.gpus} GPUs{simulated}")
    first_deadline = _first_deadline(hooks, ctx)
    provider_meta = getattr(provider, "lease_meta", None)   # optional: e.g. AWS's region, for `fleet down`
    state.begin_lease(ctx.lease_id, plan, deadline_s=first_deadline,
                      meta={**ctx.lease_meta, **(provider_meta() if provider_meta else {}),
                            "first_deadline_s": first_deadline})
    state.create_run(ctx.run_id, lease_id=ctx.lease_id, project=plan.project, user=plan.user,
                     command=ctx.command, log_path=str(ctx.run_dir / "logs"), output_dir=str(ctx.run_dir),
                     meta={"provider": plan.provider, "template": plan.template.name, "gpus": plan.gpus,
                           # the inputs pinned so far: a run whose controller dies is recorded with them
                           "pins": {k: v for k, v in ctx.record.items() if k in _PIN_KEYS}},
                     masker=_masker(ctx))
    lease: Lease | None = None
    heartbeat: Heartbeat | None = None
    summary: dict[str, Any] = {"run_id": ctx.run_id, "lease_id": ctx.lease_id, "status": "error",
                               "exit_code": ExitCode.INFRASTRUCTURE, "provider": plan.provider,
                               "template": plan.template.name, "gpus": plan.gpus, "machines": plan.machine_count,
                               "simulated_gpus": plan.template.simulated_gpus, "run_dir": str(ctx.run_dir)}
    error: BaseException | None = None
    released = False
    reported: list[Machine] = []
    try:
        lease = _lease(provider, ctx, hooks, first_deadline, reported)
        ctx.lease = lease
        # A provider may choose another mix than planned (AWS: 2 × 4 GPUs instead of 1 × 8).
        summary["machines"] = len(lease.machines)
        state.activate_lease(lease)
        # Before waiting for SSH: e.g. the ledger opens its segments now, so a controller killed
        # while machines boot still leaves their cost on record for `fleet down` to close.
        call_hooks(hooks, "after_lease", ctx)
        beat_state = _HeartbeatState(ctx, hooks)
        heartbeat = Heartbeat(lease, plan.heartbeat_ttl_s,
                              caps=[beat_state.cap],
                              on_deadline=beat_state.record_deadline,
                              warn=events.warn, publish=deadline_publisher(provider, lease))
        ctx.machines_lost = heartbeat.lost
        _check_cancel(ctx)
        events.phase("ready", f"waiting for SSH on {len(lease.machines)} machine(s)")
        _wait_all_ready(ctx, lease.machines)
        heartbeat.beat()
        heartbeat.start()
        _check_cancel(ctx)
        events.phase("stage", "copying inputs to machines")
        if not any(call_hooks(hooks, "stage", ctx)):
            from .stage import pack_directory, push_archive
            archive = pack_directory(ctx.config.base_dir)
            parallel(lease.machines, lambda m: push_archive(m, archive))
        _check_cancel(ctx)
        if ctx.config.setup:
            events.phase("setup", ctx.config.setup)
            code, failing = _execute(ctx, hooks, lease, ctx.config.setup, setup=True)
            # A setup we stopped (Ctrl-C, budget) exits 143/137: that is the stop, not a broken setup.
            _check_cancel(ctx)
            _check_not_released_elsewhere(ctx)
            if code != 0:
                summary.update(status="setup-failed", exit_code=code, failing_rank=failing)
                raise _SetupFailed()
        events.phase("run", ctx.command)
        code, failing = _execute(ctx, hooks, lease, ctx.command)
        if not ctx.stop_reason:
            _check_not_released_elsewhere(ctx)
        if ctx.stop_reason == "budget":
            summary.update(status="budget-stopped", exit_code=ExitCode.BUDGET_STOPPED, message=ctx.stop_message)
        elif ctx.stop_reason:
            summary.update(status="cancelled", exit_code=ExitCode.CANCELLED, message=ctx.stop_message)
        else:
            summary.update(status="succeeded" if code == 0 else "failed", exit_code=code, failing_rank=failing)
    except _SetupFailed:
        pass
    except _MachinesLost as exc:
        summary.update(status="error", exit_code=exc.exit_code, message=exc.one_line())
        if exc.failing is not None:
            summary["failing_rank"] = exc.failing
    except FleetError as exc:
        error = exc
        if ctx.stop_reason == "budget":   # the budget ran out before the run phase (e.g. while staging)
            summary.update(status="budget-stopped", exit_code=ExitCode.BUDGET_STOPPED, message=ctx.stop_message)
            error = None
        elif isinstance(exc, Cancelled) or ctx.stop_reason == "cancelled":
            summary.update(status="cancelled", exit_code=ExitCode.CANCELLED, message=ctx.stop_message or str(exc))
        else:
            summary.update(status="error", exit_code=exc.exit_code, message=exc.one_line())
    except BaseException as exc:
        error = exc
        summary.update(status="error", exit_code=1, message=f"{type(exc).__name__}: {exc}")
    finally:
        if lease is not None:
            _collect(ctx, lease, summary)
        if heartbeat is not None:
            heartbeat.stop()
        kept = False
        # --keep is for looking at machines after a run ended on its own (failed ones above all);
        # a cancelled, budget-stopped or broken run releases as if --keep had not been given.
        if lease is not None and keep_s and summary["status"] in KEEPABLE:
            try:
                keep_lease(state, lease, keep_s, events)
                summary["kept_until"] = to_jsonable(utcnow() + timedelta(seconds=keep_s))
                kept = True
            except FleetError as exc:
                events.warn(f"could not keep lease {lease.id} ({exc.one_line()}); releasing it")
        if not kept:
            count = len(lease.machines) if lease is not None else plan.machine_count
            events.phase("release", f"destroying {count} machine(s)")
            # A failed lease() cleans up after itself; releasing what it reported is the backstop.
            made = lease if lease is not None else _partial_lease(ctx, reported) if reported else None
            released = release_lease(provider, state, ctx.lease_id, made, events)
        summary.update(ended_at=to_jsonable(utcnow()), started_at=to_jsonable(ctx.started_at),
                       duration_s=round((utcnow() - ctx.started_at).total_seconds(), 3), released=released)
        call_hooks(hooks, "after_run", ctx, summary)
        redact = _masker(ctx).redacting()     # secret values never reach the summary, state or summary.json
        summary.update(redact.mask_obj(summary))
        state.finish_run(ctx.run_id, summary["status"], summary.get("exit_code"), {"summary": summary}, masker=redact)
        (ctx.run_dir / "summary.json").write_text(json.dumps(redact.mask_obj(to_jsonable(summary)), indent=2) + "\n")
    if error is not None and not isinstance(error, (FleetError, Exception)):
        raise error   # KeyboardInterrupt/SystemExit after cleanup
    if error is not None and summary["status"] == "error":
        raise error
    return summary


def _masker(ctx: RunContext):
    from .masking import Masker
    return Masker.for_config(ctx.config)


class _SetupFailed(Exception):
    pass


_PIN_KEYS = ("code_commit", "code_snapshot", "code_dirty_snapshot", "code_subdir", "data_snapshots")


def _lease(provider, ctx: RunContext, hooks: list, deadline_s: int, reported: list[Machine]) -> Lease:
    """provider.lease, with each machine recorded in the state and its cost segment opened (hooks'
    on_machine) the moment the provider reports it: a controller SIGKILLed inside lease() used to
    leave machines that no ledger entry knew of (fault matrix: "machines unbilled"). Providers
    without the optional `on_machine` keyword are called as before."""
    # Ctrl-C / SIGTERM while many machines are being made: the provider stops and releases them.
    cancel = {"cancel": ctx.cancel} if _accepts_keyword(provider, "cancel") else {}
    if not _accepts_on_machine(provider):
        return provider.lease(ctx.plan, ctx.lease_id, deadline_s, **cancel)

    def on_machine(machine: Machine) -> None:
        reported.append(machine)
        # Its watchdog started just before: now + deadline_s is at or after its own deadline.
        ctx.state.record_machine(ctx.lease_id, machine, deadline=utcnow() + timedelta(seconds=deadline_s))
        call_hooks(hooks, "on_machine", ctx, machine)

    return provider.lease(ctx.plan, ctx.lease_id, deadline_s, on_machine=on_machine, **cancel)


def _accepts_on_machine(provider) -> bool:
    return _accepts_keyword(provider, "on_machine")


def _accepts_keyword(provider, name: str) -> bool:
    import inspect
    try:
        params = inspect.signature(provider.lease).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _partial_lease(ctx: RunContext, machines: list[Machine]) -> Lease:
    now = utcnow()
    return Lease(id=ctx.lease_id, provider=ctx.plan.provider, template=ctx.plan.template.name,
                 machines=sorted(machines, key=lambda m: m.node_rank), created_at=ctx.started_at, deadline=now,
                 max_deadline=now, project=ctx.plan.project, user=ctx.plan.user,
                 heartbeat_ttl_s=ctx.plan.heartbeat_ttl_s)


class _HeartbeatState:
    """The heartbeat's calls into the state database (the budget's cap reads the ledger; the
    deadline is written to the lease). They run on the heartbeat's thread, where an exception ends
    the thread with a traceback and no more beats, so the machines die at their deadline mid-run
    (found under load: a full disk during the run). A failed call is a warning; beats go on."""

    def __init__(self, ctx: RunContext, hooks: list):
        self.ctx, self.hooks = ctx, hooks
        self.last_cap: tuple[float, float] | None = None   # (cap, monotonic time it was computed)
        self.failing: set[str] = set()

    def _failed(self, what: str, exc: Exception) -> None:
        if what not in self.failing:   # once per streak, not every beat
            self.ctx.events.warn(f"could not {what} ({exc}); the heartbeat goes on")
        self.failing.add(what)

    def cap(self) -> float | None:
        try:
            value = _cap(self.hooks, self.ctx)
        except Exception as exc:  # noqa: BLE001
            self._failed("recompute the budget's deadline cap", exc)
            if self.last_cap is None:
                return None
            value, at = self.last_cap   # the last cap known, counted down: never more than it allowed
            return max(0.0, value - (time.monotonic() - at))
        self.failing.discard("recompute the budget's deadline cap")
        if value is not None:
            self.last_cap = (value, time.monotonic())
        return value

    def record_deadline(self, deadline) -> None:
        try:
            self.ctx.state.set_lease_deadline(self.ctx.lease_id, deadline)
            self.failing.discard("record the lease's deadline")
        except Exception as exc:  # noqa: BLE001 — the machines hold their deadline themselves
            self._failed("record the lease's deadline", exc)


def _cap(hooks: list, ctx: RunContext) -> float | None:
    caps = [c for c in call_hooks(hooks, "deadline_cap_s", ctx) if c is not None]
    return min(caps) if caps else None


def _first_deadline(hooks: list, ctx: RunContext) -> int:
    """The machines' first deadline, already capped by a hook (the budget) before any heartbeat."""
    cap = _cap(hooks, ctx)
    first = first_deadline_s(ctx.plan)
    return first if cap is None else max(1, min(first, int(cap)))


def _check_cancel(ctx: RunContext) -> None:
    if ctx.cancel.is_set():
        raise Cancelled(ctx.stop_message or "cancelled")


def _wait_ready(machine: Machine) -> None:
    from .remote.ssh import wait_ready
    wait_ready(machine, timeout=_ready_timeout_s()).close()


def _wait_all_ready(ctx: RunContext, machines: list[Machine]) -> None:
    """Wait for SSH on every machine, but stop waiting as soon as the run is cancelled: a cancelled
    CI job must release its machines within seconds, not after the ready timeout. Daemon threads,
    so a wait still polling a machine that release has just destroyed never holds up exit."""
    errors: list[BaseException] = []

    def one(m: Machine) -> None:
        try:
            _wait_ready(m)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(m,), daemon=True, name=f"ready-{m.id}") for m in machines]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads) and not errors:
        _check_cancel(ctx)
        time.sleep(0.05)
    _check_cancel(ctx)
    if errors:
        raise errors[0]


def process_env(ctx: RunContext, lease: Lease, machine: Machine, local_rank: int | None) -> dict[str, str]:
    """The environment of one process: config [env] and secrets, then fleet's variables (FLEET_*
    and the conventional MASTER_ADDR/MASTER_PORT/RANK/... that frameworks read), which win.
    The lease must be prepared (lease_prepare.prepare_lease): its own port and venv."""
    from .lease_prepare import master_port, python_env_dir
    cfg, plan = ctx.config, ctx.plan
    gpus_per = len(machine.gpu_slots)
    env = {k: str(v) for k, v in cfg.env.items()}
    for name in cfg.secrets:
        if name in os.environ:
            env[name] = os.environ[name]
    out_dir = f"{machine.workdir}/outputs/{ctx.run_id}"
    master = min(lease.machines, key=lambda m: m.node_rank)
    nodes = len(lease.machines)
    if local_rank is None:   # one process per machine: it is the node's only rank
        rank, local, local_world, world = machine.node_rank, 0, 1, nodes
    else:
        rank, local = machine.node_rank * gpus_per + local_rank, local_rank
        local_world, world = gpus_per, nodes * gpus_per
    port = str(master_port(lease))
    env.update({
        "FLEET_RUN_ID": ctx.run_id, "FLEET_LEASE_ID": lease.id, "FLEET_NODE_RANK": str(machine.node_rank),
        "FLEET_NUM_NODES": str(nodes), "FLEET_GPUS_PER_NODE": str(gpus_per),
        "FLEET_MASTER_ADDR": master.rendezvous_host, "FLEET_MASTER_PORT": port,
        "FLEET_DATA": f"{machine.workdir}/data", "FLEET_PROJECT": plan.project,
        "FLEET_SIMULATED_GPUS": "1" if plan.template.simulated_gpus else "0",
        "PYTHONUNBUFFERED": "1",
        "FLEET_RANK": str(rank), "FLEET_WORLD_SIZE": str(world),
        "MASTER_ADDR": master.rendezvous_host, "MASTER_PORT": port, "RANK": str(rank), "WORLD_SIZE": str(world),
        "LOCAL_RANK": str(local), "LOCAL_WORLD_SIZE": str(local_world), "NODE_RANK": str(machine.node_rank),
    })
    venv = python_env_dir(lease, machine.id)
    if venv:   # remote/exec.py puts its bin/ first on PATH
        env["VIRTUAL_ENV"] = venv
    if local_rank is None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(s) for s in machine.gpu_slots)
        env["FLEET_OUTPUT_DIR"] = out_dir
    else:
        env["CUDA_VISIBLE_DEVICES"] = str(machine.gpu_slots[local_rank])
        env["FLEET_LOCAL_RANK"] = str(local_rank)
        env["FLEET_OUTPUT_DIR"] = f"{out_dir}/rank-{rank}"
    return env


def _execute(ctx: RunContext, hooks: list, lease: Lease, command: str, *, setup: bool = False) -> tuple[int, Any]:
    """Run `command` (once per machine, or per GPU slot) and wait, honouring stop requests."""
    from .lease_prepare import prepare_lease
    from .remote.exec import ProcessSpec, close_sessions, signal_processes, start_processes
    from .stage import code_dir
    prepare_lease(ctx, lease)   # once per lease: its rendezvous port and venvs, before setup
    specs = []
    for m in lease.machines:
        slots = [None] if (setup or not ctx.config.per_gpu or not m.gpu_slots) else range(len(m.gpu_slots))
        for local in slots:
            env = process_env(ctx, lease, m, local)
            label = (f"setup:{m.node_rank}" if setup else
                     str(m.node_rank) if local is None else env["FLEET_RANK"])
            pid_name = "setup" if setup else f"run-{ctx.run_id}-{label}"
            specs.append(ProcessSpec(m, label, command, env, code_dir(m), f"{m.state_dir}/{pid_name}.pid"))
    log_dir = ctx.run_dir / "logs"
    from .ci import Masker
    # Secret values (config `secrets`) are masked in every log line, CI or not (found by the
    # security tests: an experiment printing its token put it in runs/<id>/logs and the terminal).
    masker = Masker.for_config(ctx.config)
    running = start_processes(specs, ctx.events.log, log_dir, cancel=ctx.cancel, mask=masker or None)
    tick_s = 1.0
    next_tick = time.monotonic() + tick_s
    signalled_at = last_signal = None
    try:
        while not all(p.done.is_set() for p in running):
            now = time.monotonic()
            if now >= next_tick:
                call_hooks(hooks, "on_tick", ctx)
                next_tick += tick_s
                _give_up_on_lost(ctx, running)
            if ctx.cancel.is_set():
                grace = (ctx.config.budgets.grace_s if ctx.stop_reason == "budget" else
                         grace_s() if ctx.cancel_grace_s is None else ctx.cancel_grace_s)
                if signalled_at is None:
                    signalled_at = now
                    ctx.events.warn(f"{ctx.stop_message or ctx.stop_reason}: stopping the experiment "
                                    f"(SIGTERM, then SIGKILL after {grace:g}s) and releasing machines; "
                                    "interrupt again to hurry")
                if ctx.hurry.is_set() or now - signalled_at > grace:
                    signal_processes(running, "KILL")
                    for p in running:
                        p.done.wait(5)
                    break
                # Repeated: a process that was still starting when the stop came gets it too.
                if last_signal is None or now - last_signal >= 1.0:
                    signal_processes(running, "TERM")
                    last_signal = time.monotonic()
            time.sleep(0.05)
    finally:
        close_sessions(running)
    failing = lost = None
    code = 0
    for p in sorted(running, key=lambda p: (p.spec.machine.node_rank, p.spec.label)):
        rc, why = p.result.exit_code, None
        if p.result.error:
            ctx.events.warn(p.result.error)
            why = p.result.error
            rc = ExitCode.INFRASTRUCTURE if rc is None else rc
        if rc is None:
            rc = ExitCode.CANCELLED if ctx.cancel.is_set() else ExitCode.INFRASTRUCTURE
            why = None if ctx.cancel.is_set() else f"machine {p.spec.machine.id}: no result from the command"
        elif rc == -1:
            # SSH reports -1 when the channel closed without an exit status: sshd (the machine) went
            # away under the command. That is the machine's failure, not the experiment's.
            rc = ExitCode.CANCELLED if ctx.cancel.is_set() else ExitCode.INFRASTRUCTURE
            why = None if ctx.cancel.is_set() else (
                f"machine {p.spec.machine.id} ({p.spec.machine.address}) closed the connection before "
                "the command ended: the machine was lost or released from outside")
        if rc != 0 and failing is None:
            failing, code, lost = p.spec.label, rc, why
    if lost is not None and not ctx.cancel.is_set():
        try:
            _check_not_released_elsewhere(ctx)   # the more precise reason, when it is that
        except _MachinesLost as exc:
            exc.failing = failing
            raise
        raise _MachinesLost(f"rank {failing}: {lost}", failing=failing)
    if setup and code == 0 and not ctx.cancel.is_set():
        from .lease_prepare import after_setup
        after_setup(ctx, lease)   # the next lease with the same requirements starts from this venv
    return code, failing


class _MachinesLost(InfrastructureError):
    """Machines vanished under the command (lost, or released from outside): the run ends as an
    infrastructure error (status error, exit 10), not as the experiment's failure, and `up` still
    returns its summary (the outputs that came home, the first rank that lost its machine)."""

    def __init__(self, message: str, *, failing: str | None = None):
        super().__init__(message, hint="the experiment itself did not fail; run it again")
        self.failing = failing


def _check_not_released_elsewhere(ctx: RunContext) -> None:
    """Raise when the lease was released while this run still used it (`fleet down LEASE` from
    another shell, the reaper): the machines vanished from under the experiment."""
    try:
        status, released_at = ctx.state.lease_status(ctx.lease_id)
    except Exception:  # noqa: BLE001 — an unreadable state must not turn into the run's result
        return
    if status in (None, "active", "leasing") and released_at is None:
        return
    when = f" at {to_jsonable(released_at)}" if released_at else ""
    raise _MachinesLost(f"lease {ctx.lease_id} was released from outside this run{when} "
                        "(`fleet down` or the reaper): its machines are gone")


def _give_up_on_lost(ctx: RunContext, running: list) -> None:
    """Stop waiting for processes on machines past their own deadline (their network is gone, so
    heartbeats could not extend it): the watchdog ended them, and a silently dropped connection
    would otherwise keep the run waiting for many minutes (found by the fault matrix: cut link)."""
    lost = ctx.machines_lost() if ctx.machines_lost else set()
    for p in running:
        if p.spec.machine.id in lost and not p.done.is_set():
            p.result.error = (f"machine {p.spec.machine.id} ({p.spec.machine.address}) stopped answering and "
                              "has passed its deadline, so its watchdog ended it (network lost?)")
            p.done.set()


def _collect(ctx: RunContext, lease: Lease, summary: dict) -> None:
    """Bring outputs home, best effort and bounded: a dead machine must not block release."""
    from .safe_extract import Extracted
    from .stage import fetch_directory
    if ctx.hurry.is_set():
        summary["outputs_fetched"] = 0
        return
    ctx.events.phase("collect", f"fetching outputs into {ctx.run_dir}")

    def fetch(m: Machine) -> Extracted:
        try:
            got = fetch_directory(m, f"{m.workdir}/outputs/{ctx.run_id}", ctx.run_dir / f"node-{m.node_rank}")
        except Exception as exc:  # noqa: BLE001
            ctx.events.warn(f"could not fetch outputs from {m.id}: {exc}")
            return Extracted()
        for why in got.skipped:   # each one named: an output that did not come home is never silent
            ctx.events.warn(f"output skipped on node {m.node_rank}: {why}")
        return got

    with ThreadPoolExecutor(max_workers=min(16, len(lease.machines) or 1)) as pool:
        got = list(pool.map(fetch, lease.machines))
    summary["outputs_fetched"] = sum(g.files for g in got)
    links = sum(g.symlinks for g in got)
    if links:
        summary["outputs_symlinks"] = links
    skipped = [why for g in got for why in g.skipped]
    if skipped:
        summary["outputs_skipped"] = skipped[:100]


def release_lease(provider, state, lease_id: str, lease: Lease | None, events: Events) -> bool:
    try:
        if lease is not None:
            provider.release(lease)
        state.set_lease_status(lease_id, "released")
        return True
    except Exception as exc:  # noqa: BLE001 — the watchdog still ends the machines; say so
        events.warn(f"release of {lease_id} failed ({exc}); machines end at their deadline; "
                    "run `fleet down --all` to retry")
        return False


def keep_lease(state, lease: Lease, keep_s: int, events: Events) -> None:
    """Leave the lease up for keep_s: its machines now hold a deadline keep_s away, no heartbeat needed."""
    extend_lease(state, lease, keep_s)
    events.phase("keep", f"lease {lease.id} kept for {keep_s}s: `fleet down {lease.id}` to release")


def extend_lease(state, lease: Lease, seconds: int) -> None:
    from .remote.ssh import connect
    limit = (lease.max_deadline - utcnow()).total_seconds()
    ttl = max(0.0, min(float(seconds), limit))

    def one(m: Machine) -> None:
        with connect(m, timeout=10) as s:
            s.run([m.python, m.agent_path, "extend", "--state-dir", m.state_dir, "--ttl", f"{ttl:.3f}"])

    parallel(lease.machines, one)
    until = utcnow() + timedelta(seconds=ttl)
    state.set_lease_deadline(lease.id, until, keep_until=until)
    from .heartbeat import publish_once
    problem = publish_once(lease, until)     # e.g. AWS: the reaper's fleet:deadline tag
    if problem:
        import logging
        logging.getLogger("fleet").warning(problem)


def command_from_argv(argv: list[str]) -> str:
    return argv[0] if len(argv) == 1 else shlex.join(argv)


__all__ = ["up", "release_lease", "extend_lease", "keep_lease", "InfrastructureError"]
