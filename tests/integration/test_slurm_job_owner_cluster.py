"""Against the real test cluster (tests/fixtures/slurm.py): a job of another user's is never fleet's.
fleet runs here as root, a Slurm operator, so a scancel of someone else's job succeeds: the jobs
below, submitted by `nobody` with a lease's public name and tag, or under a job id the lease
recorded, were cancelled by `fleet down` (release) and `fleet down --all` (the leftover sweep)."""
from __future__ import annotations

import os
import subprocess
from datetime import timedelta

import pytest

from tests.fixtures.slurm import wait_for

from fleet.ids import new_lease_id
from fleet.models import Lease, Machine, utcnow
from fleet.providers.slurm.commands import AllocationRequest, LocalRunner, SlurmCommands
from fleet.providers.slurm.errors import SlurmError
from fleet.providers.slurm.provider import HOLD, SlurmProvider, tag
from fleet.providers.slurm.settings import SlurmSettings

from tests.integration.test_slurm_extend import AsUser

pytestmark = pytest.mark.timeout(300)


def _submit(slurm: SlurmCommands, name: str, comment: str) -> str | None:
    req = AllocationRequest(name=name, nodes=1, gpus_per_node=1, time_limit_s=300, comment=comment,
                            output="/dev/null", workdir="/tmp")
    try:
        return slurm.submit(req, HOLD)
    except SlurmError:
        return None       # nobody's association has not reached slurmctld yet


def _lease(lease_id: str, job_id: str | None) -> Lease:
    now = utcnow()
    machines = [Machine(id=f"{lease_id}-n0", lease_id=lease_id, node_rank=0, host="127.0.0.1", port=22, user="u",
                        key_path="k", host_key="h", workdir="/tmp/w", provider_ref={"job_id": job_id, "node": "n1"})
                ] if job_id else []
    return Lease(id=lease_id, provider="slurm", template="slurm-1gpu", machines=machines, created_at=now,
                 deadline=now + timedelta(minutes=5), max_deadline=now + timedelta(minutes=10), meta={})


def test_fleet_down_leaves_another_users_job_alone(slurm_env, fleet_home, capsys):
    from fleet.state import open_state
    if slurm_env.accounting:     # associations are enforced: the user needs one to submit
        subprocess.run(["sacctmgr", "-i", "add", "user", "nobody", f"account={slurm_env.account}"],
                       capture_output=True, timeout=60, env={**os.environ, **slurm_env.env})
    them = SlurmCommands(AsUser("nobody", slurm_env.env))
    lost, reused = new_lease_id(), new_lease_id()
    # A lease whose controller died before it recorded its job: only its name and tag are known,
    # and another user queued a job wearing both.
    forged = wait_for(lambda: _submit(them, f"fleet-{lost}", tag(lost)), 60, "nobody's association", interval=1)
    # A lease whose recorded job id now names another user's job (the controller lost its state).
    theirs = wait_for(lambda: _submit(them, "their-own-job", ""), 60, "nobody's second job", interval=1)
    try:
        wait_for(lambda: len([j for j in them.queue([forged, theirs]) if not j.state.finished]) == 2, 60,
                 "nobody's jobs in the queue")
        state = open_state()
        for lease in (_lease(lost, None), _lease(reused, theirs)):
            state.save_lease(lease)
        provider = SlurmProvider(SlurmSettings(poll_s=0.5))
        provider.release(_lease(lost, None))                  # `fleet down LOST`
        provider.release(_lease(reused, theirs))              # `fleet down REUSED`
        assert provider.sweep(set()) == []                    # `fleet down --all`
        still = {j.job_id: j.state for j in them.queue([forged, theirs])}
        assert set(still) == {forged, theirs} and not any(s.finished for s in still.values()), still
        assert f"Slurm job {theirs} is now user nobody's job 'their-own-job'" in capsys.readouterr().err
        assert provider.slurm.queue([forged, theirs]) == []   # not listed as root's
    finally:
        SlurmCommands(LocalRunner(slurm_env.env)).cancel([forged, theirs])   # the fixture cancels root's only
