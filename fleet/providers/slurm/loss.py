"""Why Slurm took a lease's machines away (ExplainsLoss): the job's final state, read once when a
run lost its machines. The run usually sees the loss first as its SSH channels closing (Slurm
signals the node steps, sshd goes with them) while squeue still shows the job COMPLETING; waiting
a few seconds for the final state lets the run's message and the recovery line say PREEMPTED or
NODE_FAIL instead of "the connection closed"."""
from __future__ import annotations

import time

from ...models import Lease
from ..capabilities import ExplainsLoss
from .ownership import is_leases
from .parsing import JobState

COMPLETING_WAIT_S = 15.0     # a job on its way out: how long to wait for the state that names why
RUNNING_WAIT_S = 3.0         # a job still RUNNING: the controller may not have marked it yet


def lease_job_ids(lease: Lease) -> list[str]:
    ids = {str(m.provider_ref["job_id"]) for m in lease.machines if m.provider_ref.get("job_id")}
    if (lease.meta or {}).get("slurm_job"):
        ids.add(str(lease.meta["slurm_job"]))
    return sorted(ids)


def ended_why(state: JobState, reason: str | None) -> str:
    return f"{state.value} ({reason})" if reason and reason != "None" else state.value


class ExplainsJobLoss(ExplainsLoss):
    """Mixed into SlurmProvider (which supplies `_commands_for`)."""

    def loss_reason(self, lease: Lease) -> str | None:
        ids = lease_job_ids(lease)
        if not ids:
            return None
        slurm = self._commands_for(lease)   # type: ignore[attr-defined]
        start = time.monotonic()
        while True:
            try:
                jobs = [j for j in slurm.queue(ids) if is_leases(j, lease.id)]   # not a reused id's job
            except Exception:  # noqa: BLE001 — a controller that does not answer leaves the message as it was
                return None
            waited = time.monotonic() - start
            ended = [j for j in jobs if j.state.finished and j.state is not JobState.COMPLETING]
            if ended:
                job = ended[0]
                return f"Slurm ended job {job.job_id} under the run: {ended_why(job.state, job.reason)}"
            if not jobs:
                return None   # the controller forgot it: nothing more precise to say
            if any(j.state is JobState.COMPLETING for j in jobs):
                if waited > COMPLETING_WAIT_S:
                    return f"Slurm is ending job {jobs[0].job_id} under the run (COMPLETING)"
            elif waited > RUNNING_WAIT_S:
                return None   # still running: the loss was not Slurm's doing (network, sshd)
            time.sleep(0.5)
