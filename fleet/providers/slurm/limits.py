"""The allocation's time limit: what fleet asks for at submission (`--time`) and raising it later
(`fleet extend`, `--keep`: `scontrol update TimeLimit`). Slurm counts whole minutes of the job's run
time (not the time it is suspended); fleet never asks past max_duration and never lowers a limit."""
from __future__ import annotations

import math
import re
from datetime import datetime, timedelta

from ...models import Lease, Plan, utcnow
from .commands import SlurmCommands
from .errors import SlurmError
from .ownership import is_leases
from .parsing import JobState

# A job Slurm suspended (gang scheduling, PreemptMode=SUSPEND, `scontrol suspend`) or stopped keeps
# its nodes and resumes where it was: its limit can be raised as a running job's.
HOLDS_NODES = (JobState.RUNNING, JobState.SUSPENDED, JobState.STOPPED)


def time_limit_minutes(plan: Plan) -> int:
    """The allocation's --time: the lease's end (max_duration, or sooner when the budget runs out at
    full burn) rounded up to Slurm's whole minutes, but never past max_duration (at least 1)."""
    end_s = plan.max_duration_s if plan.budget_deadline_s is None else min(plan.max_duration_s,
                                                                          plan.budget_deadline_s)
    return max(1, min(math.ceil(end_s / 60), plan.max_duration_s // 60))


def raise_time_limit(slurm: SlurmCommands, lease: Lease, ids: list[str], until: datetime) -> datetime:
    """`scontrol update TimeLimit` so the allocation lasts to `until` (whole minutes, rounded up,
    never past max_duration); never lowers it. The hard end now in force. One squeue call, one
    scontrol call when raising; a refusal (operator-only on most clusters) is one line. Only a job
    of the login user's that carries the lease's name or tag is changed (ownership.py)."""
    job = next((j for j in slurm.queue(ids) if j.state in HOLDS_NODES and is_leases(j, lease.id)), None)
    if job is None:
        raise SlurmError(f"lease {lease.id}: Slurm job {','.join(ids) or '?'} is not running; nothing to extend",
                         slurm_reason="not running")
    # Slurm's time limit counts run time only (a suspension stops its clock and moves its end later),
    # and squeue's elapsed time is that run time: so the allocation ends `time_limit - elapsed` after
    # now (after its resume, for a suspended job), whatever was suspended before. `started` is the
    # start of that run time, not the wall-clock start (earlier by any suspension).
    started = utcnow() - timedelta(seconds=job.elapsed_s or 0)
    if not job.time_limit_s:
        return _running(job, lease.max_deadline)        # no time limit: only max_duration ends it
    current = started + timedelta(seconds=job.time_limit_s)
    # Never past max_duration: the same cap as at submission (whole minutes, counted from the job's start).
    max_minutes = int((lease.max_deadline - lease.created_at).total_seconds() // 60)
    minutes = min(math.ceil((until - started).total_seconds() / 60), max_minutes)
    if minutes * 60 <= job.time_limit_s:
        return _running(job, current)
    try:
        slurm.set_time_limit(job.job_id, minutes * 60)
    except SlurmError as exc:
        reason = re.sub(r"^\S+ error: ", "", exc.slurm_reason or exc.message)
        raise SlurmError(f"Slurm refused to raise job {job.job_id}'s time limit to {minutes} min ({reason}); "
                         f"the lease still ends at {current.strftime('%Y-%m-%d %H:%M:%S')} UTC",
                         slurm_reason=reason,
                         hint="most clusters let only operators raise a time limit: ask one to run "
                              f"`scontrol update JobId={job.job_id} TimeLimit={minutes}`") from None
    return _running(job, min(started + timedelta(minutes=minutes), lease.max_deadline))


def _running(job, end: datetime) -> datetime:
    """`end`, for a running job. A suspended one's limit is raised all the same, but its machines'
    sshd and agents are stopped with it: moving their own deadlines would wait on SSH, then fail as
    a machine that does not answer. Said as it is instead, before any machine is tried."""
    if job.state is JobState.RUNNING:
        return end
    state = job.state.value.lower()
    raise SlurmError(f"Slurm job {job.job_id} is {state}: its time limit lets it run until "
                     f"{end.strftime('%Y-%m-%d %H:%M:%S')} UTC if resumed now (Slurm does not count the time it "
                     f"is {state}), but its machines are stopped with it, so their own deadlines did not move",
                     slurm_reason=state,
                     hint=f"run `fleet extend` again once Slurm resumes job {job.job_id} "
                          f"(`squeue -j {job.job_id}` shows RUNNING)")
