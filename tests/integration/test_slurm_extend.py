"""`fleet extend` on Slurm against the real test cluster (tests/fixtures/slurm.py): the allocation's
time limit (`scontrol update TimeLimit`) and the machines' own deadlines move together, only ever
later, never past max_duration; a cluster that refuses (raising a time limit is operator-only) is
one line and nothing moves. No test here waits for a time limit to pass.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from datetime import timedelta
from typing import Mapping, Sequence

import pytest

from tests.fixtures.slurm import wait_for

from fleet.ids import new_lease_id
from fleet.models import Lease, utcnow
from fleet.plan import make_plan
from fleet.providers.base import HasHardLimit, choose_mix
from fleet.providers.slurm.commands import AllocationRequest, CommandResult, LocalRunner, SlurmCommands
from fleet.providers.slurm.errors import SlurmError
from fleet.providers.slurm.parsing import JobState
from fleet.providers.slurm.provider import HOLD, SlurmProvider
from fleet.providers.slurm.settings import SlurmSettings
from fleet.run.keep import extend_lease

pytestmark = pytest.mark.timeout(300)


def limit_s(cluster, job_id: str) -> int | None:
    job = SlurmCommands(LocalRunner(cluster.env)).job(job_id)
    return job.time_limit_s if job else None


def remaining_s(machine) -> float:
    from fleet.remote.ssh import connect
    with connect(machine, timeout=30) as s:
        out = s.run([machine.python, machine.agent_path, "status", "--state-dir", machine.state_dir]).stdout
    return json.loads(out)["remaining_s"]


def test_extend_raises_the_time_limit_and_the_machines_deadline_only_ever_later(slurm_env, fleet_home, tmp_path):
    from fleet.state import open_state
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    provider = SlurmProvider(SlurmSettings(workdir=str(nodes), poll_s=0.5))
    assert isinstance(provider, HasHardLimit)
    plan = make_plan(provider="slurm", mix=choose_mix(provider, "slurm-1gpu", 1), max_duration_s=600,
                     heartbeat_ttl_s=120, project="slurm-test", user="tester")
    # A budget that runs out in 2 minutes caps the allocation's --time at 2 (max_duration is 10).
    plan = dataclasses.replace(plan, budget_deadline_s=120)
    lease = provider.lease(plan, new_lease_id(), 60)
    job_id = lease.meta["slurm_job"]
    try:
        assert limit_s(slurm_env, job_id) == 120
        extend_lease(open_state(), lease, 300, provider)                   # what `fleet extend LEASE 5m` does
        assert limit_s(slurm_env, job_id) in (300, 360)                    # whole minutes, rounded up
        assert 280 <= remaining_s(lease.machines[0]) <= 301
        extend_lease(open_state(), lease, 30, provider)                    # shorter: nothing moves earlier
        assert limit_s(slurm_env, job_id) in (300, 360)
        assert remaining_s(lease.machines[0]) > 250
        end = provider.extend_limit(lease, utcnow() + timedelta(hours=5))  # never past max_duration
        assert limit_s(slurm_env, job_id) == 600 and end <= lease.max_deadline
    finally:
        provider.release(lease)


class AsUser:
    """Slurm's tools run as another (non-operator) user, like a cluster's ordinary users."""

    def __init__(self, user: str, env: Mapping[str, str]):
        self.user, self.local = user, LocalRunner(env)

    def __call__(self, argv: Sequence[str], *, stdin: str | None = None, env: Mapping[str, str] | None = None,
                 timeout: float = 60) -> CommandResult:
        pinned = [f"{k}={v}" for k, v in {**self.local.env, **(env or {})}.items()]
        done = self.local(["runuser", "-u", self.user, "--", "env", *pinned, *argv], stdin=stdin, timeout=timeout)
        return CommandResult(tuple(argv), done.returncode, done.stdout, done.stderr)


def test_a_cluster_that_refuses_to_raise_the_limit_is_one_line_and_nothing_moves(slurm_env):
    if slurm_env.accounting:     # associations are enforced: the user needs one to submit
        subprocess.run(["sacctmgr", "-i", "add", "user", "nobody", f"account={slurm_env.account}"],
                       capture_output=True, timeout=60, env={**os.environ, **slurm_env.env})
    runner = AsUser("nobody", slurm_env.env)
    slurm = SlurmCommands(runner)
    req = AllocationRequest(name="fleet-refused-extend", nodes=1, gpus_per_node=1, time_limit_s=120,
                            comment="fleet:lease=refused", output="/dev/null", workdir="/tmp")
    job_id = wait_for(lambda: _submit(slurm, req), 60, "nobody's association to reach slurmctld", interval=1)
    try:
        wait_for(lambda: (j := slurm.job(job_id)) and j.state is JobState.RUNNING, 60, "the job to run")
        now = utcnow()
        lease = Lease(id="refused", provider="slurm", template="slurm-1gpu", machines=[], created_at=now,
                      deadline=now + timedelta(minutes=2), max_deadline=now + timedelta(minutes=10),
                      meta={"slurm_job": job_id})
        with pytest.raises(SlurmError) as err:
            SlurmProvider(runner=runner).extend_limit(lease, now + timedelta(minutes=5))
        line = err.value.one_line()
        assert "Slurm refused to raise job" in line and "Access/permission denied" in line, line
        assert "still ends at" in line and "\n" not in line
        assert limit_s(slurm_env, job_id) == 120
    finally:
        SlurmCommands(LocalRunner(slurm_env.env)).cancel([job_id])      # the fixture cancels root's jobs only


def _submit(slurm: SlurmCommands, req: AllocationRequest) -> str | None:
    try:
        return slurm.submit(req, HOLD)
    except SlurmError:
        return None
