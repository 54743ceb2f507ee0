"""A Slurm job's comment is any cluster user's text and `squeue` lists every user's jobs: a job of
someone else's carrying `fleet:lease=<one of ours>` (ids show in squeue) must not stand for our
lease. It did: `fleet status` showed a lease whose own job had ended as running on their job,
`fleet down` scancel'ed their job with ours (refused: the release failed, the lease stayed up),
and the leftover sweep tried to cancel it as an orphan of ours."""
from __future__ import annotations

import dataclasses
from datetime import timedelta

from fleet.models import Lease, Machine, utcnow
from fleet.providers.slurm.parsing import JobState, QueuedJob
from fleet.providers.slurm.provider import SlurmProvider
from fleet.providers.slurm.settings import SlurmSettings


def _job(job_id: str, state: JobState, comment: str) -> QueuedJob:
    return QueuedJob(job_id, "fleet-l-1", state, None, ("n1",), 1, 1, 600, 10, comment)


class _Slurm:
    def __init__(self, jobs):
        self.jobs, self.cancelled = jobs, []

    def queue(self, ids=None):
        return [j for j in self.jobs if ids is None or j.job_id in ids]

    def job(self, job_id):
        return next((j for j in self.jobs if j.job_id == job_id), None)

    def cancel(self, ids, signal=None):
        self.cancelled += list(ids)


def _lease(lease_id: str, job_id: str | None) -> Lease:
    now = utcnow()
    machines = [Machine(id=f"{lease_id}-n0", lease_id=lease_id, node_rank=0, host="n1", port=22, user="u",
                        key_path="k", host_key="h", workdir="/tmp/w", provider_ref={"job_id": job_id})] if job_id else []
    return Lease(id=lease_id, provider="slurm", template="slurm-1gpu", machines=machines, created_at=now,
                 deadline=now + timedelta(minutes=5), max_deadline=now + timedelta(minutes=10), meta={})


def _provider(slurm) -> SlurmProvider:
    provider = SlurmProvider(SlurmSettings())
    provider.slurm = slurm
    return provider


def test_a_foreign_job_wearing_our_tag_is_not_the_leases_job():
    slurm = _Slurm([_job("42", JobState.FAILED, "fleet:lease=l-1"), _job("77", JobState.RUNNING, "fleet:lease=l-1")])
    lease = _lease("l-1", "42")
    assert [j.job_id for j in _provider(slurm)._lease_jobs(slurm, lease)] == ["42"]
    _provider(slurm).release(lease)
    assert slurm.cancelled == ["42"]
    # A lease whose job id never got recorded (killed between sbatch and the record) still has its tag.
    assert [j.job_id for j in _provider(slurm)._lease_jobs(slurm, _lease("l-1", None))] == ["42", "77"]


def test_the_leftover_sweep_cancels_only_jobs_the_lease_recorded(fleet_home):
    from fleet.state import open_state
    state = open_state()
    # Leases no longer live (a live one's release ends its own jobs, and may be a teammate's queuing `fleet up`).
    state.save_lease(dataclasses.replace(_lease("l-old", "42"), status="released"))
    state.save_lease(dataclasses.replace(_lease("l-crashed", None), status="expired"))
    slurm = _Slurm([_job("42", JobState.RUNNING, "fleet:lease=l-old"),
                    _job("77", JobState.RUNNING, "fleet:lease=l-old"),       # someone else's, our tag
                    _job("88", JobState.PENDING, "fleet:lease=l-crashed")])   # ours, its id never recorded
    ended = _provider(slurm).sweep(set())
    assert slurm.cancelled == ["42", "88"] and ended == ["l-old-n0", "l-crashed-n0"]
