"""Giving back some nodes of a Slurm lease while the others run on (`ReleasesMachines`: a sweep's
warm pool releasing the machines it has no trial left for, fleet/sweep/shrink.py).

For each Slurm job the released machines belong to, in this order:

1. each released machine's node step is ended: `scancel --signal=USR1 J.S` makes its node.py end
   the machine (the watchdog ends every process of it, sshd included), remove the machine directory
   and its secrets, and exit, leaving the lease's shared staging directory to the nodes that stay;
   the step ends with it. One still running after STEP_END_S is cancelled (SIGTERM, then Slurm's
   SIGKILL after KillWait).
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
(an error: the caller keeps billing it). Ending the machine first is what makes every failure safe:
a machine the heartbeat no longer extends would otherwise reach its deadline, and node.py then
cancels the whole job, the nodes still in use with it. So when Slurm's side fails before a machine
was ended (the controller does not answer, a step will not end), the machine is ended over its own
SSH instead: the agent's `release` makes its watchdog end it (reason "released", not "deadline"),
and node.py then removes the directory and exits without touching the job.

A suspended (or stopped) job can neither give a node back nor end its stopped steps: release_machines
fails for it, naming the state, and the caller keeps billing those machines. (Their heartbeat has
stopped: when the job resumes past their deadline, node.py cancels the job, as for any failed release
whose machine SSH could not end either.)
"""
from __future__ import annotations

import threading
import time
from typing import Iterable

from ...models import Lease
from .commands import SlurmCommands
from .errors import SlurmError
from .parsing import JobState, expand_hostlist
from .steps import NodeStep, reap, step_name

STEP_END_S = 30.0          # node.py's own cleanup takes a few seconds (3 s for its children at most)
RELEASE_SIGNAL = "USR1"    # node.py: this machine alone is released
# One partial release of a lease at a time (a sweep's early release on its own thread and the pool's
# final release beside it): each reads the job's nodes and shrinks it to those it keeps, and a second
# shrink to nodes read before the first is refused (a job can only shrink), leaving a node whose
# machine was ended in the job, billed until the lease ends.
_LEASE_LOCKS: dict[str, threading.Lock] = {}
_LEASE_LOCKS_LOCK = threading.Lock()


def release_nodes(slurm: SlurmCommands, lease: Lease, machine_ids: Iterable[str], steps: list[NodeStep]) -> None:
    """End the named machines of `lease` and give their nodes back to the cluster; the others run
    on. Idempotent: a machine whose node the job no longer holds is already released. The node
    steps that ended leave `steps` (this process's srun frontends) and are reaped. Raises when a
    node could not leave its job; its machine is ended all the same (over SSH where Slurm failed)."""
    wanted = set(machine_ids)
    with _LEASE_LOCKS_LOCK:
        lock = _LEASE_LOCKS.setdefault(lease.id, threading.Lock())
    try:
        with lock:
            _release(slurm, lease, wanted, steps)
    except Exception:
        for machine in [m for m in lease.machines if m.id in wanted]:
            end_over_ssh(machine)
        raise


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


def _release(slurm: SlurmCommands, lease: Lease, wanted: set[str], steps: list[NodeStep]) -> None:
    by_job: dict[str, set[str]] = {}
    for m in lease.machines:
        node = m.provider_ref.get("node")
        job_id = str(m.provider_ref.get("job_id") or (lease.meta or {}).get("slurm_job") or "")
        if m.id in wanted and node and job_id:
            by_job.setdefault(job_id, set()).add(node)
    stuck: list[str] = []
    for job_id, nodes in sorted(by_job.items()):
        record = slurm.job_record(job_id)
        state = JobState.parse(record.get("JobState")) if record is not None else None
        if state is None or state.finished or state.queued or state is JobState.COMPLETING:
            continue                        # ended, ending or requeued: its nodes are going back anyway
        if state is not JobState.RUNNING:   # SUSPENDED, STOPPED: the job holds the nodes, its steps cannot end
            stuck.append(f"Slurm job {job_id} is {state.value}: node(s) {', '.join(sorted(nodes))} cannot be "
                         "given back now; their GPUs stay held")
            continue
        held = expand_hostlist(record.get("NodeList"))
        drop = [n for n in held if n in nodes]
        keep = [n for n in held if n not in nodes]
        if not drop:
            continue
        try:
            end_steps(slurm, job_id, drop)
        finally:
            ended = [s for s in steps if s.node in drop]        # their srun frontends exit with the step
            steps[:] = [s for s in steps if s not in ended]
            reap(ended, timeout_s=10)
        batch_host = record.get("BatchHost") if record.get("BatchFlag") not in (None, "0") else None
        if not keep:
            slurm.cancel([job_id])
        elif batch_host in drop:
            stuck.append(f"Slurm cannot take node {batch_host} out of job {job_id}: the job's batch step runs "
                         "there (it queued through sbatch); its machine is ended, its GPUs stay held until the "
                         "lease ends")
            if len(drop) > 1:
                slurm.shrink(job_id, keep + [batch_host])
        else:
            slurm.shrink(job_id, keep)
    if stuck:
        raise SlurmError("; ".join(stuck), slurm_reason="node stays in the job")


def end_steps(slurm: SlurmCommands, job_id: str, nodes: list[str], timeout_s: float = STEP_END_S) -> None:
    """End fleet's node steps on `nodes` of the job: RELEASE_SIGNAL, then scancel for any still
    there after `timeout_s`. Returns once none is left; SlurmError if one outlives both."""
    names = {step_name(n) for n in nodes}

    def left() -> list[str]:
        return [s.step_id for s in slurm.steps(job_id) if s.name in names]

    for step_id in left():
        slurm.signal_step(step_id, RELEASE_SIGNAL)
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
