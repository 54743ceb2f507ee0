"""Polling a lease's job: while it pends (provider._wait_running) and while it runs (watch_job), one
`squeue --jobs=<id>` per poll, and the rule for a squeue that answers nothing fleet can read.

A squeue that fails (non-zero exit: a controller restarting, failing over, too busy to answer in
time) or prints what fleet cannot read says nothing about the job: once is no reason to end a run.
But a watch that ignores it forever never reports a lease whose cluster is gone. So the lease is
given up on after UNREADABLE_POLLS polls in a row that fail, spanning at least UNREADABLE_S seconds
(both, so that neither a fast poll nor one slow timeout decides): the run hears one line naming
squeue's last error. A squeue that is not installed or not executable (errors.ToolMissing) will not
come back: that is said at once. 300 s outlasts a controller's failover (SlurmctldTimeout, 120 s by default)
and a restart; any readable answer starts the count again."""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from ..base import LeaseWatch
from .errors import ToolMissing
from .ownership import is_leases, owned
from .parsing import JobState, QueuedJob

if TYPE_CHECKING:
    from .commands import SlurmCommands

UNREADABLE_POLLS = 5
UNREADABLE_S = 300.0
COMPLETING_WAIT_S = 10.0             # a job seen COMPLETING: how long to wait for its final state


class Unreadable:
    """Counts a job's polls in a row that squeue failed; `failed` says when to give up on it."""

    def __init__(self, job_id: str):
        self.job_id = job_id
        self.count, self.since, self.last_error = 0, 0.0, ""

    def ok(self) -> None:
        self.count = 0

    def failed(self, exc: BaseException) -> str | None:
        """None while squeue may yet answer; else the one line to tell the user."""
        now = time.monotonic()
        if self.count == 0:
            self.since = now
        self.count += 1
        said = exc.message if isinstance(exc, ToolMissing) else str(exc)     # its hint is for `fleet up`
        why = "".join(c if c.isprintable() else " " for c in " ".join(said.split()))[:300]
        self.last_error = why or type(exc).__name__
        if isinstance(exc, ToolMissing):
            return (f"Slurm job {self.job_id}: {self.last_error}; fleet can no longer tell whether the job "
                    "still holds the machines")
        if self.count < UNREADABLE_POLLS or now - self.since < UNREADABLE_S:
            return None
        return (f"Slurm job {self.job_id}: squeue answered nothing fleet could read for {self.count} polls over "
                f"{now - self.since:.0f}s ({self.last_error}); fleet can no longer tell whether the job "
                "still holds the machines")


def why(job: QueuedJob) -> str:
    return f"{job.state.value} ({job.reason})" if job.reason else job.state.value


# Slurm stopped the job's processes but keeps its allocation (gang scheduling, PreemptMode=SUSPEND,
# `scontrol suspend`; STOPPED: `scancel -s STOP`): it resumes where it was, so the run is kept.
HELD = (JobState.SUSPENDED, JobState.STOPPED)


def watch_job(slurm: "SlurmCommands", lease_id: str, job_id: str, watch: LeaseWatch, poll_s: float,
              stop: threading.Event) -> None:
    """Until `stop`: if Slurm ends the job (NODE_FAIL, PREEMPTED, TIMEOUT, someone's scancel), its id
    names another job, or squeue stays unreadable (above), tell the run once, naming why. A job Slurm
    holds (HELD) is not ended: the run hears once that it was suspended and once that it resumed."""
    completing_since = None
    held_since: float | None = None
    unreadable = Unreadable(job_id)
    while not stop.wait(poll_s if completing_since is None else 0.5):
        try:
            job = slurm.job(job_id)
            foreign = job is not None and not (owned(slurm, job) and is_leases(job, lease_id))
        except Exception as exc:  # noqa: BLE001 — a slow controller (or `id` on it) is not yet a lost lease
            line = unreadable.failed(exc)
            if line is not None and not stop.is_set():
                watch.on_lost(line)
                return
            continue
        unreadable.ok()
        if stop.is_set():
            return
        if foreign:
            watch.on_lost(f"Slurm job {job_id} is gone: its id now names another job ({job.name!r}, "
                          f"user {job.user or '?'})")
            return
        if job is not None and job.state is JobState.COMPLETING:
            # On its way out: wait (briefly) for the final state, which names why.
            completing_since = completing_since or time.monotonic()
            if time.monotonic() - completing_since < COMPLETING_WAIT_S:
                continue
        if job is not None and job.state in HELD:
            if held_since is None:
                held_since = time.monotonic()
                watch.on_suspended(f"Slurm {job.state.value.lower()} job {job_id}"
                                   f"{f' ({job.reason})' if job.reason and job.reason != 'None' else ''}: its "
                                   "processes are stopped and it keeps its nodes; the run goes on when Slurm resumes it")
            continue
        if held_since is not None and job is not None and job.state is JobState.RUNNING:
            watch.on_resumed(f"Slurm resumed job {job_id} after {time.monotonic() - held_since:.0f}s; the run goes on")
            held_since = None
        if job is None or job.state not in (JobState.RUNNING, JobState.CONFIGURING):
            watch.on_lost(f"Slurm ended job {job_id} under the run: {why(job) if job is not None else 'left the queue'}")
            return
