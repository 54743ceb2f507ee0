"""Partial release on Slurm (fleet/providers/slurm/shrink.py) against the real test cluster
(tests/fixtures/slurm.py: two nodes × 2 GPUs, slurmdbd): a lease of both whole nodes gives one back
while the other runs on. The released machine's step ends (its directory and secrets removed, its
sshd gone), the job shrinks to one node in squeue, another job can be given the freed node at once,
and sacct counts the freed GPUs only up to the release.
"""
from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.fixtures.slurm import wait_for
from tests.fixtures.slurm_lease import cluster_plan, cluster_provider

from fleet.ids import new_lease_id
from fleet.providers.slurm.commands import AllocationRequest, SlurmCommands
from fleet.providers.slurm.parsing import JobState

pytestmark = pytest.mark.timeout(300)


def _ssh(machine, command: str) -> str:
    from fleet.remote.ssh import connect
    with connect(machine, timeout=30) as session:
        result = session.run(command)
    assert result.exit_code == 0, result.stderr
    return result.stdout


def _refuses(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return False
    except OSError:
        return True


def _other_job(slurm: SlurmCommands) -> str | None:
    """A 1-node job wanting a whole node's 2 GPUs, granted at once or not at all (salloc --immediate)."""
    return slurm.allocate_now(AllocationRequest(name="someone-else", nodes=1, gpus_per_node=2, time_limit_s=60,
                                                comment="test:someone-else"))


def test_releasing_one_node_shrinks_the_job_and_frees_the_node_for_another(slurm_env, fleet_home, tmp_path):
    provider, slurm, nodes_dir = cluster_provider(tmp_path, slurm_env)
    plan = cluster_plan(provider, "slurm-2gpu", 4)
    lease = provider.lease(plan, new_lease_id(), 120)                    # every GPU of the cluster
    other = None
    try:
        job_id = lease.meta["slurm_job"]
        gone, kept = lease.machines                                       # release node rank 0: the first node
        gone_node, kept_node = gone.provider_ref["node"], kept.provider_ref["node"]
        gone_dir = Path(gone.workdir).parent                                # <nodes_dir>/fleet-<id>-<random>
        assert gone_dir.is_dir() and (gone_dir / "ssh_host_ed25519_key").is_file()
        assert _other_job(slurm) is None, "the cluster had a free node before the release"
        # Held a few seconds at the full size first: slurmdbd keys a job's records by id and submit
        # time, and a resize within the second the job was submitted overwrites its first record.
        time.sleep(3)

        provider.release_machines(lease, [gone.id])
        released_at = time.monotonic()

        # The released machine: its step ended, its directory (host key, authorized key) removed, its sshd gone.
        assert not gone_dir.exists()
        assert wait_for(lambda: _refuses(gone.host, gone.port), 30, "the released machine's sshd to stop")
        assert not [s for s in slurm.steps(job_id) if gone_node in s.nodes]
        # The job runs on, on one node; the remaining machine answers and still reads the shared staging.
        job = slurm.job(job_id)
        assert job.state is JobState.RUNNING and job.nodes == (kept_node,) and job.node_count == 1, job
        assert job.gpus == 2
        assert _ssh(kept, "echo $FLEET_MACHINE_ID").strip() == kept.id
        assert Path(lease.meta["slurm_staging"]).is_dir(), "a partial release removed the lease's shared staging"
        states = {s.machine_id: s.state for s in provider.describe(lease)}
        assert states == {gone.id: "gone", kept.id: "running"}
        provider.release_machines(lease, [gone.id])                       # idempotent: already given back

        # Another job gets the freed node at once.
        other = wait_for(lambda: _other_job(slurm), 60, "another job to be granted the freed node")
        assert slurm.job(other).nodes == (gone_node,)
        slurm.cancel([other])
        # Held a few seconds more at the new size, so sacct can tell the two sizes apart.
        time.sleep(max(0.0, 6 - (time.monotonic() - released_at)))
    finally:
        if other:
            slurm.cancel([other])
        provider.release(lease)
    wait_for(lambda: not list(nodes_dir.iterdir()), 60, "every machine directory to be removed")
    if not slurm_env.accounting:
        return
    # Accounting: one record at 4 GPUs up to the release (RESIZING), one at 2 GPUs after it.
    acct = wait_for(lambda: (a := provider.accounting(lease))["states"] == ["CANCELLED"]
                    and {r["state"] for r in a["records"]} == {"RESIZING", "CANCELLED"} and a, 60,
                    "the job's accounting records at both sizes")
    before, after = ([r for r in acct["records"] if r["state"] == s] for s in ("RESIZING", "CANCELLED"))
    assert len(before) == 1 and len(after) == 1, acct
    assert before[0]["gpus"] == 4 and after[0]["gpus"] == 2 and after[0]["nodes"] == [kept_node], acct
    assert after[0]["elapsed_s"] >= 4, acct
    assert acct["jobs"] == [job_id] and acct["elapsed_s"] == before[0]["elapsed_s"] + after[0]["elapsed_s"]
    assert acct["gpu_seconds"] == 4 * before[0]["elapsed_s"] + 2 * after[0]["elapsed_s"]
    assert acct["gpu_seconds"] < 4 * acct["elapsed_s"], "the freed GPUs were counted after their release"


def test_a_batch_jobs_first_node_stays_in_the_job_but_its_machine_ends(slurm_env, fleet_home, tmp_path):
    """A lease that queued through sbatch (forced here: no salloc) cannot give back the node of its
    batch step: release_machines says so in one line, and ends that machine anyway, so its deadline
    can never cancel the job under the machine that runs on."""
    from fleet.providers.slurm.errors import SlurmError
    provider, slurm, nodes_dir = cluster_provider(tmp_path, slurm_env)
    provider.slurm.allocate_now = lambda req: None                       # as if the nodes were busy
    plan = cluster_plan(provider, "slurm-1gpu", 2)
    lease = provider.lease(plan, new_lease_id(), 120)
    try:
        job_id = lease.meta["slurm_job"]
        first, second = lease.machines
        assert slurm.job_record(job_id)["BatchFlag"] == "1"
        with pytest.raises(SlurmError) as err:
            provider.release_machines(lease, [first.id])
        line = err.value.one_line()
        assert "batch step runs there" in line and first.provider_ref["node"] in line and "\n" not in line
        assert not Path(first.workdir).parent.exists()              # the machine ended all the same
        job = slurm.job(job_id)
        assert job.state is JobState.RUNNING and job.node_count == 2       # the node stays held
        assert _ssh(second, "echo ok").strip() == "ok"
        provider.release_machines(lease, [second.id])                     # any other node still goes
        assert slurm.job(job_id).nodes == (first.provider_ref["node"],)
    finally:
        provider.release(lease)
    wait_for(lambda: not list(nodes_dir.iterdir()), 60, "every machine directory to be removed")


def test_a_failed_slurm_side_still_ends_the_machine_over_ssh_and_spares_the_job(slurm_env, fleet_home, tmp_path):
    """When Slurm's side fails before the step was ended (here: the controller's answer about the
    job fails), the machine is ended through its own agent: its directory goes, its step ends
    without cancelling the job, and the other machine runs on."""
    from fleet.providers.slurm.errors import ControllerUnreachable
    provider, slurm, nodes_dir = cluster_provider(tmp_path, slurm_env)
    plan = cluster_plan(provider, "slurm-1gpu", 2)
    lease = provider.lease(plan, new_lease_id(), 120)
    try:
        job_id = lease.meta["slurm_job"]
        gone, kept = lease.machines

        def unreachable(job):
            raise ControllerUnreachable("scontrol did not return within 60s", slurm_reason="timeout")

        provider.slurm.job_record = unreachable
        with pytest.raises(ControllerUnreachable):
            provider.release_machines(lease, [gone.id])
        wait_for(lambda: not Path(gone.workdir).parent.exists(), 60, "the machine's directory to go")
        wait_for(lambda: not [s for s in slurm.steps(job_id) if gone.provider_ref["node"] in s.nodes], 60,
                 "the released machine's step to end")
        job = slurm.job(job_id)
        assert job.state is JobState.RUNNING and job.node_count == 2, job   # not cancelled; the node stays held
        assert _ssh(kept, "echo ok").strip() == "ok"
        assert Path(lease.meta["slurm_staging"]).is_dir()
    finally:
        provider.release(lease)
    wait_for(lambda: not list(nodes_dir.iterdir()), 60, "every machine directory to be removed")
