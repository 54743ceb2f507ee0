"""Giving back some nodes of a Slurm lease while the others run on (`ReleasesMachines`: a sweep's
warm pool releasing the machines it has no trial left for, fleet/sweep/shrink.py).

For each Slurm job the released machines belong to, in this order:

1. each released machine is asked to end alone: the controller writes a release request with the
   machine's own token on its node step's stdin (steps.py NodeStep.request_release; over its SSH,
   the agent's `release`, where this process has no frontend for the step). node.py then ends the
   machine (the watchdog ends every process of it, sshd included), removes the machine directory
   and its secrets, and exits, leaving the lease's shared staging directory to the nodes that stay;
   the step ends with it. One still running after STEP_END_S is cancelled (SIGTERM, then Slurm's
   SIGKILL after KillWait). No signal is used for this: a user's `scancel -s USR1 JOB` (ask the
   training to checkpoint) reaches every step, and must never end a machine (node.py ignores it).
2. the node goes back to the cluster: `scontrol update JobId=J NodeList=<the nodes that stay>`
   shrinks the running allocation (its owner may; only growing needs an operator), and another job
   can be given the node at once. When no node of that job stays (a lease of one job per node),
   the job is cancelled instead.

Accounting follows the allocation: slurmdbd closes the job's record at the resize (state RESIZING,
the old size) and opens one at the new size; `sacct -j J` lists both, so each node's GPUs count
only while the job held them (accounting.py adds them up).

Slurm cannot take the node running a batch job's batch step out of it (`Invalid node name
specified`): for a lease that queued through sbatch, the machine on the job's first node is ended
all the same, but its node stays in the job until the lease ends, and release_machines says so
(`NodesKept`, naming the machines whose nodes did go back: the caller stops billing those, and keeps
billing the others). Ending the machine first keeps every failure safe: when Slurm's side fails
before a machine was ended (the controller does not answer, a step will not end), it is still ended
through its step's stdin or its own SSH (the agent's `release`: reason "released", not "deadline"),
and node.py exits without touching the job. Where all of those fail, the machine reaches its own
deadline (the heartbeat no longer extends it); node.py then gives its node back or, only when no
other fleet machine of the job is left, cancels the job: never under the machines still in use.

A suspended (or stopped) job can neither give a node back nor end its stopped steps: release_machines
fails for it, naming the state, and the caller keeps billing those machines.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterable

from ...models import Lease
from .commands import SlurmCommands
from .errors import SlurmError
from .parsing import JobState, expand_hostlist
from .steps import NodeStep, reap, step_name

STEP_END_S = 30.0          # node.py ends a machine in seconds (its watchdog 10 s, sshd 3 s, at most)
# One partial release of a lease at a time (a sweep's early release on its own thread and the pool's
# final release beside it): each reads the job's nodes and shrinks it to those it keeps, and a second
# shrink to nodes read before the first is refused (a job can only shrink), leaving a node whose
# machine was ended in the job, billed until the lease ends.
_LEASE_LOCKS: dict[str, threading.Lock] = {}
_LEASE_LOCKS_LOCK = threading.Lock()


class NodesKept(SlurmError):
    """Some released machines' nodes stay in the job (held, billed); `released` names the machines
    whose nodes did go back (no longer billed)."""

    def __init__(self, message: str, *, released: list[str], slurm_reason: str = ""):
        self.released = released
        super().__init__(message, slurm_reason=slurm_reason)


def release_nodes(slurm: SlurmCommands, lease: Lease, machine_ids: Iterable[str], steps: list[NodeStep],
                  owned: Callable[[str], bool] | None = None) -> None:
    """End the named machines of `lease` and give their nodes back to the cluster; the others run
    on. Idempotent: a machine whose node the job no longer holds is already released. The node
    steps that ended leave `steps` (this process's srun frontends) and are reaped. Raises when a
    node could not leave its job (NodesKept when others did); its machine is ended all the same.
    `owned(job_id)` (ownership.owns) is asked before a running job is changed: a job that is not
    the lease's (a reused id, another user's) is never shrunk or cancelled, its machines are gone."""
    wanted = set(machine_ids)
    released: list[str] = []
    with _LEASE_LOCKS_LOCK:
        lock = _LEASE_LOCKS.setdefault(lease.id, threading.Lock())
    try:
        with lock:
            _release(slurm, lease, wanted, steps, released, owned)
    except Exception as exc:
        for machine in [m for m in lease.machines if m.id in wanted and m.id not in released]:
            ask_to_end(machine, steps)
        if released and not isinstance(exc, NodesKept):
            raise NodesKept(f"{_one_line(exc)}; released {', '.join(released)}", released=released,
                            slurm_reason=getattr(exc, "slurm_reason", "")) from exc
        raise


def _one_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def ask_to_end(machine, steps: list[NodeStep]) -> bool:
    """Ask the machine to end alone: the release request on its step's stdin, else over its SSH."""
    step = next((s for s in steps if s.node == machine.provider_ref.get("node")), None)
    return (step is not None and step.request_release()) or end_over_ssh(machine)


def end_over_ssh(machine) -> bool:
    """The agent's `release` on the machine: its watchdog ends it, and its node step then exits
    without cancelling the job. Best effort (False: not reached, e.g. already ended)."""
    from ...remote.ssh import connect
    try:
        with connect(machine, timeout=15) as session:
            session.run([machine.python, "-S", machine.agent_path, "release", "--state-dir", machine.state_dir],
                        check=True, timeout=30)
        return True
    except Exception:  # noqa: BLE001 — gone already is the usual reason; the caller raises its own error
        return False


def _release(slurm: SlurmCommands, lease: Lease, wanted: set[str], steps: list[NodeStep],
             released: list[str], owned: Callable[[str], bool] | None) -> None:
    by_job: dict[str, dict[str, Any]] = {}
    for m in lease.machines:
        node = m.provider_ref.get("node")
        job_id = str(m.provider_ref.get("job_id") or (lease.meta or {}).get("slurm_job") or "")
        if m.id in wanted and node and job_id:
            by_job.setdefault(job_id, {})[node] = m
    stuck: list[str] = []
    for job_id, machines in sorted(by_job.items()):
        record = slurm.job_record(job_id)
        state = JobState.parse(record.get("JobState")) if record is not None else None
        if (state is None or state.finished or state.queued or state is JobState.COMPLETING
                or owned is not None and not owned(job_id)):
            released += [m.id for m in machines.values()]   # ended, ending, requeued or not the lease's job
            continue
        if state is not JobState.RUNNING:   # SUSPENDED, STOPPED: the job holds the nodes, its steps cannot end
            stuck.append(f"Slurm job {job_id} is {state.value}: node(s) {', '.join(sorted(machines))} cannot be "
                         "given back now; their GPUs stay held")
            continue
        held = expand_hostlist(record.get("NodeList"))
        drop = [n for n in held if n in machines]
        keep = [n for n in held if n not in machines]
        released += [m.id for n, m in machines.items() if n not in held]     # given back before
        if not drop:
            continue
        try:
            end_steps(slurm, job_id, [machines[n] for n in drop], steps)
        finally:
            ended = [s for s in steps if s.node in drop]        # their srun frontends exit with the step
            steps[:] = [s for s in steps if s not in ended]
            reap(ended, timeout_s=10)
        batch_host = record.get("BatchHost") if record.get("BatchFlag") not in (None, "0") else None
        if not keep:
            slurm.cancel([job_id])
        elif batch_host in drop:
            stuck.append(f"Slurm cannot take node {batch_host} out of job {job_id}: the job's batch step runs "
                         f"there (it queued through sbatch); its machine ({machines[batch_host].id}) is ended, "
                         "its GPUs stay held until the lease ends")
            if len(drop) > 1:
                slurm.shrink(job_id, keep + [batch_host])
        else:
            slurm.shrink(job_id, keep)
        released += [machines[n].id for n in drop if n != batch_host or not keep]
    if stuck:
        message = "; ".join(stuck) + (f"; released {', '.join(released)}" if released else "")
        raise NodesKept(message, released=list(released), slurm_reason="node stays in the job")


def end_steps(slurm: SlurmCommands, job_id: str, machines: list, steps: list[NodeStep],
              timeout_s: float = STEP_END_S) -> None:
    """End fleet's node steps of those machines: each asked to end alone (ask_to_end), then scancel
    for any still there after `timeout_s`. Returns once none is left; SlurmError if one outlives both."""
    nodes = [m.provider_ref.get("node") for m in machines]
    names = {step_name(n) for n in nodes}

    def left() -> list[str]:
        return [s.step_id for s in slurm.steps(job_id) if s.name in names]

    if not left():
        return
    for machine in machines:
        ask_to_end(machine, steps)
    if _gone(left, timeout_s):
        return
    slurm.cancel(left())
    if not _gone(left, timeout_s):
        raise SlurmError(f"the fleet step on Slurm node(s) {', '.join(nodes)} of job {job_id} did not end; "
                         "the node stays in the job until the lease ends", slurm_reason="step did not end")


def _gone(left, timeout_s: float) -> bool:
    end, delay = time.monotonic() + timeout_s, 0.1
    while left():
        if time.monotonic() >= end:
            return False
        time.sleep(delay)
        delay = min(1.0, delay * 2)
    return True
