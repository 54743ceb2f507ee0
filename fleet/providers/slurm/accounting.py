"""What Slurm's accounting (sacct, one call) says about a lease's jobs: when they ended, and their
GPU-seconds for reconciliation.

A job that shrank (a sweep's pool gave nodes back: shrink.py) has one record per size: slurmdbd
closes the old one at the resize (state RESIZING) and opens one at the new size under the same job
id. Each record's elapsed × GPUs counts its own stretch, so the sum holds each node's GPUs only
while the job held them; the job's elapsed time is the sum of its records', its state the last one's.
"""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from .commands import SlurmCommands
from .errors import SlurmError
from .parsing import JobState


def ended_at(slurm: SlurmCommands, job_ids: list[str], lease_id: str | None = None) -> datetime | None:
    """When accounting says the jobs ended (one sacct call; with `lease_id`, only the lease's own
    records: SlurmCommands.accounting); None without accounting."""
    if not job_ids:
        return None
    try:
        ends = [j.end for j in slurm.accounting(job_ids, lease_id) if j.end is not None]
    except SlurmError:
        return None
    return max(ends) if ends else None


def lease_accounting(slurm: SlurmCommands, job_ids: list[str], price_per_gpu_hour: Decimal,
                     lease_id: str | None = None) -> dict[str, Any]:
    """sacct's view of the lease: GPU-seconds (each record's elapsed × allocated GRES, resize
    records included) and what they cost at price_per_gpu_hour; each record as it stands. With
    `lease_id`, another job under a recorded id (a reused id, another user's) is never billed."""
    records = slurm.accounting(job_ids, lease_id)
    gpu_s = sum(r.gpu_seconds for r in records)
    jobs = list(dict.fromkeys(r.job_id for r in records))
    elapsed = {j: sum(r.elapsed_s for r in records if r.job_id == j) for j in jobs}
    last: dict[str, Any] = {}
    for r in records:                 # a job's state is its record after the last resize
        if r.state is not JobState.RESIZING or r.job_id not in last:
            last[r.job_id] = r
    return {"jobs": jobs, "gpu_seconds": gpu_s, "elapsed_s": max(elapsed.values(), default=0),
            "cost_usd": Decimal(gpu_s) / Decimal(3600) * price_per_gpu_hour,
            "states": [last[j].state.value for j in jobs],
            "records": [{"job": r.job_id, "state": r.state.value, "gpus": r.gpus, "elapsed_s": r.elapsed_s,
                         "nodes": list(r.nodes)} for r in records]}
