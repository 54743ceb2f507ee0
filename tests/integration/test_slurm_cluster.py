"""The Slurm command layer against a real slurmctld + two slurmd + slurmdbd (tests/fixtures/slurm.py).

Every job goes through fleet/providers/slurm/commands.py (locally, or over SSH to a login node that
is a real sshd on loopback); the fixture cancels whatever a test leaves queued.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.slurm import job_processes, wait_for

from fleet.providers.slurm import errors as E
from fleet.providers.slurm.commands import AllocationRequest, LocalRunner, SlurmCommands, SSHRunner, srun_argv
from fleet.providers.slurm.parsing import JobState

HOLD = "#!/bin/sh\nexec sleep 600\n"          # an allocation held until scancel or its time limit


@pytest.fixture
def slurm(slurm_env) -> SlurmCommands:
    return SlurmCommands(LocalRunner(slurm_env.env))


def request(name: str, nodes: int, gpus: int, out: Path | None = None, minutes: int = 10, **kw) -> AllocationRequest:
    return AllocationRequest(name=name, nodes=nodes, gpus_per_node=gpus, time_limit_s=minutes * 60,
                             comment=f"fleet:lease={name}", output=str(out) if out else "/dev/null", **kw)


def state_is(slurm: SlurmCommands, job_id: str, *states: JobState):
    job = slurm.job(job_id)
    return job if job is not None and job.state in states else None


def test_two_node_job_runs_one_task_per_node_with_a_bound_gpu(slurm, slurm_env, tmp_path):
    out = tmp_path / "out.txt"
    script = ("#!/bin/sh\n"
              "srun --ntasks-per-node=1 sh -c 'echo rank=$SLURM_PROCID node=$SLURMD_NODENAME "
              "gpus=$CUDA_VISIBLE_DEVICES world=$SLURM_NTASKS'\n")
    job_id = slurm.submit(request("fleet-two-node", nodes=2, gpus=1, out=out), script)
    done = wait_for(lambda: state_is(slurm, job_id, JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED),
                    120, "the 2-node job to finish")
    assert done.state is JobState.COMPLETED, out.read_text() if out.exists() else done
    lines = sorted(out.read_text().split())
    ranks = sorted(line for line in out.read_text().splitlines() if line.startswith("rank="))
    assert ranks == ["rank=0 node=n1 gpus=0 world=2", "rank=1 node=n2 gpus=0 world=2"], lines
    assert done.nodes == ("n1", "n2") and done.gpus == 2


def test_steps_run_in_a_held_allocation_and_scancel_ends_every_process(slurm, slurm_env):
    job_id = slurm.submit(request("fleet-held", nodes=2, gpus=2), HOLD)
    running = wait_for(lambda: state_is(slurm, job_id, JobState.RUNNING), 60, "the allocation to start")
    assert running.nodes == ("n1", "n2") and running.gpus == 4 and running.elapsed_s is not None
    assert running.comment == "fleet:lease=fleet-held" and running.time_limit_s == 600
    step = LocalRunner(slurm_env.env)(srun_argv(job_id, ["sh", "-c", "echo $SLURMD_NODENAME $CUDA_VISIBLE_DEVICES"],
                                                nodes=2), timeout=120)
    assert step.returncode == 0, step.stderr
    assert sorted(step.stdout.splitlines()) == ["n1 0,1", "n2 0,1"]
    assert [j.job_id for j in slurm.tagged("fleet:lease=fleet-held")] == [job_id]
    assert job_processes(slurm_env, job_id)                        # the held sleep is running
    slurm.cancel([job_id])
    slurm.cancel([job_id])                                          # idempotent
    wait_for(lambda: state_is(slurm, job_id, JobState.CANCELLED), 60, "the job to show CANCELLED")
    wait_for(lambda: not job_processes(slurm_env, job_id), 60, "the job's processes to end")


def test_allocations_that_do_not_fit_together_queue_then_run(slurm, slurm_env):
    first = slurm.submit(request("fleet-first", nodes=2, gpus=2), HOLD)     # every GPU of the cluster
    wait_for(lambda: state_is(slurm, first, JobState.RUNNING), 60, "the first allocation to start")
    second = slurm.submit(request("fleet-second", nodes=1, gpus=1), HOLD)
    pending = wait_for(lambda: (j := slurm.job(second)) and j.reason == "Resources" and j, 60,
                       "the second job to pend on Resources")
    assert pending.state is JobState.PENDING and pending.nodes == () and pending.elapsed_s is None
    slurm.cancel([first])
    started = wait_for(lambda: state_is(slurm, second, JobState.RUNNING), 120, "the second job to start")
    assert started.node_count == 1 and started.gpus == 1 and started.reason is None


# slurmctld ending a job at its time limit (TIMEOUT in squeue and sacct, every process gone) is
# proven once, by tests/e2e/test_slurm_up.py's controller-SIGKILL test: a limit takes 60-90 s to pass.


def test_sacct_reports_elapsed_time_and_allocated_gpus(slurm, slurm_env):
    if not slurm_env.accounting:
        pytest.skip("the test cluster runs without slurmdbd here (MariaDB or slurmdbd not installed)")
    job_id = slurm.submit(request("fleet-acct", nodes=2, gpus=2), "#!/bin/sh\nsleep 3\n")
    wait_for(lambda: state_is(slurm, job_id, JobState.COMPLETED), 120, "the job to complete")
    # Under load slurmdbd can get a step before the job's start message and files a placeholder
    # named "allocation" with part of the node list; it is completed when the job record arrives.
    (acct,) = wait_for(lambda: [j for j in slurm.accounting([job_id]) if j.end is not None and j.name == "fleet-acct"],
                       90, "sacct to record the whole job and its end")
    assert acct.state is JobState.COMPLETED and acct.exit_code == 0
    assert acct.gpus == 4 and acct.nodes == ("n1", "n2")
    assert acct.elapsed_s >= 3 and acct.gpu_seconds == acct.elapsed_s * 4
    assert acct.start is not None and (acct.end - acct.start).total_seconds() == acct.elapsed_s
    assert acct.comment == "fleet:lease=fleet-acct" and acct.account == slurm_env.account


@pytest.mark.parametrize("kw,cls,reason", [
    ({"partition": "nosuch"}, E.InvalidPartition, "Invalid partition name specified"),
    ({"account": "nosuch"}, E.InvalidAccount, "Invalid account"),
    ({"qos": "nosuch"}, E.InvalidQos, "Invalid qos specification"),
    ({"constraint": "nosuch"}, E.InvalidConstraint, "Invalid feature specification"),
    ({"gpus": 3}, E.GresUnsatisfiable, "Requested node configuration is not available"),
    ({"gpu_type": "h100"}, E.GresUnsatisfiable, "Requested node configuration is not available"),   # --gpus H100:1
    ({"qos": "onegpu", "gpus": 2}, E.QosLimitExceeded, "QOSMaxGRESPerJob"),
])
def test_sbatch_refusals_are_typed_and_leave_nothing_queued(slurm, slurm_env, kw, cls, reason):
    if cls in (E.InvalidAccount, E.InvalidQos, E.QosLimitExceeded) and not slurm_env.accounting:
        pytest.skip("accounts and QoS need slurmdbd")
    gpus = kw.pop("gpus", 1)
    with pytest.raises(cls) as info:
        slurm.submit(request("fleet-refused", nodes=1, gpus=gpus, **kw), HOLD)
    assert reason in str(info.value) and "\n" not in str(info.value)
    # Slurm may keep a record of the refused job (FAILED, reason BadConstraints): never a queued one.
    assert [j for j in slurm.tagged("fleet:lease=fleet-refused") if not j.state.finished] == []


def test_login_node_over_ssh(slurm_env, tmp_path):
    from tests.fixtures.ssh_hosts import HostFarm
    farm = HostFarm(tmp_path / "farm")
    try:
        login = farm.start("login")
        runner = SSHRunner("127.0.0.1", port=login.port, identity=str(farm.key),
                           known_hosts=str(farm.home / ".ssh" / "known_hosts"), env=slurm_env.env)
        slurm = SlurmCommands(runner)
        job_id = slurm.submit(request("fleet-ssh", nodes=1, gpus=1), HOLD)       # the script travels on stdin
        job = wait_for(lambda: state_is(slurm, job_id, JobState.RUNNING), 60, "the job submitted over SSH to run")
        assert job.comment == "fleet:lease=fleet-ssh" and job.gpus == 1
        with pytest.raises(E.InvalidPartition):
            slurm.submit(request("fleet-ssh-bad", nodes=1, gpus=1, partition="nosuch"), HOLD)
        slurm.cancel([job_id])
        wait_for(lambda: state_is(slurm, job_id, JobState.CANCELLED), 60, "the job to show CANCELLED")
        login.kill_sshd()
        with pytest.raises(E.LoginNodeUnreachable, match="login node 127.0.0.1 did not answer"):
            slurm.queue()
    finally:
        farm.stop()
