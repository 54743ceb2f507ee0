"""On the leased machines: wait until they answer, run setup and the command (per machine or per
GPU slot, with the rank environment), honour stop requests; whether outputs that did not all come
home (fleet/run/collect.py) spoil a success.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from typing import Callable, TypeVar

from ..errors import Cancelled, ExitCode, InfrastructureError
from ..models import Lease, Machine, to_jsonable
from .cleanup import keep_sink_error
from .context import RunContext
from .types import Collected, ExecResult

T = TypeVar("T")
READY_TIMEOUT_S = 120.0
GRACE_S = 10.0


def _env_seconds(name: str, default: float) -> float:
    """A duration override from the environment; unset, empty or not a number: the default. `nan`
    and `inf` parse as floats but are no duration: with FLEET_GRACE=nan no moment was ever past the
    grace, so a stopped experiment that ignored SIGTERM was never killed."""
    try:
        value = float(os.environ.get(name, "") or default)
    except ValueError:
        return default
    return value if 0 <= value < float("inf") else default


def _ready_timeout_s() -> float:
    """Seconds to wait for SSH on a new machine (FLEET_READY_TIMEOUT overrides)."""
    return _env_seconds("FLEET_READY_TIMEOUT", READY_TIMEOUT_S)


def grace_s() -> float:
    """Seconds a stopped experiment gets between SIGTERM and SIGKILL (FLEET_GRACE overrides)."""
    return _env_seconds("FLEET_GRACE", GRACE_S)


def check_cancel(ctx: RunContext) -> None:
    if ctx.cancel.is_set():
        raise Cancelled(ctx.stop_message or "cancelled")


def _wait_ready(machine: Machine) -> None:
    from ..remote.ssh import wait_ready
    wait_ready(machine, timeout=_ready_timeout_s()).close()


def wait_all_ready(ctx: RunContext, machines: list[Machine]) -> None:
    """Wait for SSH on every machine, but stop waiting as soon as the run is cancelled: a cancelled
    CI job must release its machines within seconds, not after the ready timeout. Daemon threads,
    so a wait still polling a machine that release has just destroyed never holds up exit."""
    errors: list[BaseException] = []
    waiting = [len(machines)]
    lock, settled = threading.Lock(), threading.Event()   # set by the last machine to answer, or a failure

    def one(m: Machine) -> None:
        try:
            _wait_ready(m)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            settled.set()
        finally:
            with lock:
                waiting[0] -= 1
                if not waiting[0]:
                    settled.set()

    threads = [threading.Thread(target=one, args=(m,), daemon=True, name=f"ready-{m.id}") for m in machines]
    for t in threads:
        t.start()
    # Woken the moment the last machine answers (a fixed sleep here cost up to its length per run).
    asked = time.monotonic()
    while machines and not settled.wait(0.05):
        check_cancel(ctx)
        if time.monotonic() - asked >= 1.0:   # `fleet down` meanwhile: its machines will never answer
            asked = time.monotonic()
            check_not_released_elsewhere(ctx)
    check_cancel(ctx)
    if errors:
        check_not_released_elsewhere(ctx)      # the reason, rather than the SSH failure it caused
        raise errors[0]


def process_env(ctx: RunContext, lease: Lease, machine: Machine, local_rank: int | None) -> dict[str, str]:
    """The environment of one process: config [env] and secrets, then fleet's variables (FLEET_*
    and the conventional MASTER_ADDR/MASTER_PORT/RANK/... that frameworks read), which win.
    The lease must be prepared (lease_prepare.prepare_lease): its own port and venv."""
    from ..lease_prepare import master_port, python_env_dir
    from ..snapshots.sync_remote import data_root
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
        "FLEET_DATA": data_root(machine), "FLEET_PROJECT": plan.project,
        "FLEET_SIMULATED_GPUS": "1" if plan.template.simulated_gpus else "0",
        "PYTHONUNBUFFERED": "1",
        "FLEET_RANK": str(rank), "FLEET_WORLD_SIZE": str(world),
        "MASTER_ADDR": master.rendezvous_host, "MASTER_PORT": port, "RANK": str(rank), "WORLD_SIZE": str(world),
        "LOCAL_RANK": str(local), "LOCAL_WORLD_SIZE": str(local_world), "NODE_RANK": str(machine.node_rank),
    })
    from .checkpoints import checkpoint_env
    env.update(checkpoint_env(machine, ctx.run_id, ctx.attempt))
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


def execute(ctx: RunContext, lease: Lease, command: str, *, setup: bool = False,
            on_tick: Callable[[], None] | None = None) -> ExecResult:
    """Run `command` (once per machine, or per GPU slot) and wait, honouring stop requests.
    `on_tick` runs about once a second meanwhile (budget metering, observers). Machines that
    vanished under the command (lost, or released from outside) raise MachinesLost: that is
    not the experiment's failure."""
    from ..lease_prepare import prepare_lease
    from ..remote.exec import ProcessSpec, close_sessions, signal_processes, start_processes
    from ..stage import code_dir, trial_code_dir
    prepare_lease(ctx, lease)   # once per lease: its rendezvous port and venvs, before setup
    specs = []
    for m in lease.machines:
        slots = [None] if (setup or not ctx.config.per_gpu or not m.gpu_slots) else range(len(m.gpu_slots))
        for local in slots:
            env = process_env(ctx, lease, m, local)
            label = (f"setup:{m.node_rank}" if setup else
                     str(m.node_rank) if local is None else env["FLEET_RANK"])
            pid_name = "setup" if setup else f"run-{ctx.run_id}-{label}"
            trial = ctx.options.trial_leaf if not setup else None
            specs.append(ProcessSpec(m, label, command, env, trial_code_dir(m, trial) if trial else code_dir(m),
                                     f"{m.state_dir}/{pid_name}.pid", leaf=trial or "work"))
    replaced = sorted(k for k, v in ctx.config.env.items()    # a secret's [env] value is its fallback
                      if specs and specs[0].env.get(k, v) != v and k not in ctx.config.secrets)
    if replaced and not setup:   # once per run; fleet's values win (MASTER_PORT=29500 would undo issue 13)
        ctx.events.warn(f"{', '.join(replaced)} given in [env] or --env {'is' if len(replaced) == 1 else 'are'} "
                        "set by fleet for each process (its rendezvous, ranks and directories): not used")
    log_dir = ctx.run_dir / "logs"
    from ..masking import Masker
    # Secret values (config `secrets`) are masked in every log line, CI or not (found by the
    # security tests: an experiment printing its token put it in runs/<id>/logs and the terminal).
    masker = Masker.for_config(ctx.config)
    if any(len(v) >= 8 and v in command for v in masker.values) or any(   # not a short value ("false")
            f":{p}@" in command for p in masker.url_passwords):
        # The value itself travels as an argument (of sh, and likely of the program), which any
        # user of a shared host or Slurm node can read in /proc/PID/cmdline.
        ctx.events.warn(f"the {'setup' if setup else 'command'} holds a secret's value (shown as ***): other users "
                        "of a shared machine can read a process's arguments; have the program read it from "
                        "its environment instead")
    sink, shipper = ctx.events.log, None
    if ctx.options.detached:   # read by `fleet logs -f` on any computer sharing the state
        from .log_segments import LogShipper
        shipper = LogShipper(ctx.state, ctx.run_id, warn=ctx.events.warn)
        sink = shipper.sink(sink)
    running = start_processes(specs, sink, log_dir, cancel=ctx.cancel, mask=masker or None)
    tick_s = 1.0
    next_tick = time.monotonic() + tick_s
    signalled_at = last_signal = None
    try:
        while not all(p.done.is_set() for p in running):
            now = time.monotonic()
            if now >= next_tick:
                if on_tick is not None:
                    on_tick()
                next_tick += tick_s
                _give_up_on_lost(ctx, running)
            _stop_when_recoverable_loss(ctx, running)   # every pass: a lost peer's ranks stop at once
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
            # Woken the moment a process ends (a fixed sleep cost up to its length per run).
            waiting = next((p for p in running if not p.done.is_set()), None)
            if waiting is not None:
                waiting.done.wait(0.05)
    finally:
        close_sessions(running)
        if shipper is not None:
            shipper.close()
    failing = lost = None
    code = 0
    codes: list[tuple[str, int]] = []
    for p in sorted(running, key=lambda p: (p.spec.machine.node_rank, p.spec.label)):
        if p.result.sink_error is not None:   # raised by the pipeline once the run is released and recorded
            keep_sink_error(ctx.events, p.result.sink_error)
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
        codes.append((p.spec.label, rc))
        if rc != 0 and failing is None:
            failing, code, lost = p.spec.label, rc, why
    if lost is not None and not ctx.cancel.is_set():
        try:
            check_not_released_elsewhere(ctx)   # the more precise reason, when it is that
        except MachinesLost as exc:
            exc.failing = failing
            raise
        raise MachinesLost(f"rank {failing}: {lost}", failing=failing)
    if setup and code == 0 and not ctx.cancel.is_set():
        from ..lease_prepare import after_setup
        from ..setup_cache import mark_done
        mark_done(ctx, lease, command)   # before the venv is cached: the next lease's clone carries it
        after_setup(ctx, lease)   # the next lease with the same requirements starts from this venv
    return ExecResult(code, failing, tuple(codes))


class MachinesLost(InfrastructureError):
    """Machines vanished under the command (lost, or released from outside: ReleasedElsewhere): the
    run ends as an infrastructure error (status error, exit 10), not as the experiment's failure,
    and the run still returns its summary (the outputs that came home, the first rank that lost its
    machine)."""

    def __init__(self, message: str, *, failing: str | None = None):
        super().__init__(message, hint="the experiment itself did not fail; run it again")
        self.failing = failing


class ReleasedElsewhere(MachinesLost):
    """The lease was released from outside the run (`fleet down LEASE` from another shell, the
    reaper): someone ended it on purpose, so it is not a loss that recovery may resume."""


def released_elsewhere(ctx: RunContext) -> ReleasedElsewhere | None:
    """What to report when the lease was released while this run still used it; None when not."""
    try:
        status, released_at = ctx.state.lease_status(ctx.lease_id)
    except Exception:  # noqa: BLE001 — an unreadable state must not turn into the run's result
        return None
    if status in (None, "active", "leasing") and released_at is None:
        return None
    when = f" at {to_jsonable(released_at)}" if released_at else ""
    return ReleasedElsewhere(f"lease {ctx.lease_id} was released from outside this run{when} "
                             "(`fleet down` or the reaper): its machines are gone")


def not_lost_if_released(ctx: RunContext, outcome: T) -> T:
    """`outcome` (a dataclass with status, machines_lost and message) as a release from outside, when its
    loss was seen while the lease was being released by someone else (Slurm reports the job that
    `fleet down` cancelled as lost; a spot notice may race it; a stage that failed because the
    machines went, such as staging after a `fleet down` during leasing): the user ended the run, and
    a run ended by its user is never resumed."""
    elsewhere = released_elsewhere(ctx) if outcome.machines_lost or outcome.status == "error" else None
    return outcome if elsewhere is None else replace(outcome, machines_lost=False, message=elsewhere.one_line())


def check_not_released_elsewhere(ctx: RunContext) -> None:
    """Raise ReleasedElsewhere when the lease was released while this run still used it: the
    machines vanished from under the experiment."""
    elsewhere = released_elsewhere(ctx)
    if elsewhere is not None:
        raise elsewhere


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


def _stop_when_recoverable_loss(ctx: RunContext, running: list) -> None:
    """A machine vanished under the command (its channel closed with no exit status, or its
    deadline passed unanswered) and the run may be resumed on new machines (config `recovery`):
    stop the other ranks now (SIGTERM: they write their checkpoint) instead of letting them run on
    without it. A lease released from outside (`fleet down`) is not a loss to recover from."""
    if ctx.cancel.is_set():
        return
    from .recovery import recoverable
    gone = [p for p in running if p.done.is_set() and (p.result.exit_code == -1 or p.result.error)
            and p.spec.machine.id not in ctx.lost_machines and recoverable(ctx.config, p.spec.machine)]
    if not gone:
        return
    status, released_at = ctx.state.lease_status(ctx.lease_id)
    if status not in (None, "active", "leasing") or released_at is not None:
        return
    for p in gone:
        ctx.lost_machines.add(p.spec.machine.id)
    m = gone[0].spec.machine
    ctx.request_stop("lost", f"machine {m.id} ({m.address}) was lost under the command")


def with_outputs_incomplete(outcome: T, collected: Collected | None) -> T:
    """`outcome` (a dataclass with status, exit_code and message) once the outputs are judged. A
    command that succeeded whose outputs did not all come home is no clean success: the run ends
    `error`, exit 10 (ExitCode.INFRASTRUCTURE: a machine's outputs could not be fetched), the
    message naming each machine and why. Any other outcome keeps its status and code (the failure,
    stop or loss is the first thing to know) and gains that message."""
    if collected is None or not collected.incomplete:
        return outcome
    line = "not all outputs came home: " + "; ".join(collected.incomplete)
    if outcome.status == "succeeded":
        return replace(outcome, status="error", exit_code=ExitCode.INFRASTRUCTURE,
                       message=f"the command succeeded, but {line}")
    return replace(outcome, message=f"{outcome.message}; {line}" if outcome.message else line)
