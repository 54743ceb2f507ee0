"""Recovery from Slurm preemption, against the real test cluster (tests/fixtures/slurm.py: jobs of the
default partition are cancelled, PREEMPTED, by a job of the higher-tier `urgent` partition that needs
their nodes). A training with `recovery = "always"` is preempted by a job taking both nodes: fleet
says PREEMPTED in one line, the run's checkpoint stays in the store, attempt 2 queues until the
preemptor ends and then resumes from that checkpoint; or, when the preemptor holds the nodes past the
run's `wait`, the run ends with a message naming PREEMPTED and nothing queued. Either way no job of
the run is left in the queue."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from fleet.providers.slurm.commands import LocalRunner, SlurmCommands
from fleet.providers.slurm.parsing import JobState
from tests.conftest import run_fleet, start_fleet_up, wait_for_line, wait_until
from tests.e2e.test_checkpoints import TRAIN
from tests.fixtures.slurm import PREEMPTOR_PARTITION

pytestmark = pytest.mark.timeout(480)
LIVE = (JobState.PENDING, JobState.CONFIGURING, JobState.RUNNING, JobState.SUSPENDED, JobState.COMPLETING)


def _experiment(experiment: Path, tmp_path: Path, wait: str) -> Path:
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    (experiment / "train.py").write_text(TRAIN)
    (experiment / "fleet.toml").write_text(
        'project = "t"\ncommand = "python3 train.py 80 0.1"\nprovider = "slurm"\ntemplate = "slurm-1gpu"\n'
        'max_duration = "10m"\ncheckpoint_interval = "1s"\nrecovery = "always"\nmax_restarts = 2\n\n'
        f'[slurm]\nworkdir = "{nodes}"\nprice_per_gpu_hour = 2\npoll = 0.5\nwait = "{wait}"\n')
    return experiment


def _preempt_everything(cluster) -> str:
    """A job of the preemptor partition that wants every GPU of both nodes: the run's job must go."""
    done = subprocess.run(["sbatch", "--parsable", f"--partition={PREEMPTOR_PARTITION}", f"--nodes={len(cluster.nodes)}",
                           f"--gres=gpu:{cluster.gpus_per_node}", "--exclusive", "--job-name=preemptor",
                           "--output=/dev/null", "--wrap=exec sleep 600"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **cluster.env})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(";")[0]


def _scancel(cluster, job: str) -> None:
    subprocess.run(["scancel", job], capture_output=True, timeout=60, env={**os.environ, **cluster.env})


def _start_and_preempt(exp: Path, cluster, slurm: SlurmCommands):
    proc = start_fleet_up(exp, ["--gpus", "1", "--json"], env={"FLEET_GRACE": "10"})
    seen = wait_for_line(proc, "attempt 1", timeout=180)
    seen += wait_for_line(proc, "fleet: checkpoint:", timeout=60)   # a periodic upload happened
    [lease] = json.loads(run_fleet(["status", "--json"], cwd=exp).stdout)["leases"]
    [job] = [j for j in slurm.queue() if j.comment == f"fleet:lease={lease['id']}"]
    return proc, seen, lease["id"], job.job_id, _preempt_everything(cluster)


def _summary(out: str) -> dict:
    return json.loads(out[out.index("\n{") + 1:])


def _nothing_queued(slurm: SlurmCommands) -> None:
    assert wait_until(lambda: not [j for j in slurm.queue() if j.comment.startswith("fleet:lease=")
                                   and j.state in LIVE], 60), slurm.queue()   # ended ones linger in squeue


def test_a_preempted_run_resumes_from_its_checkpoint_when_the_nodes_come_back(experiment, slurm_env, fleet_home,
                                                                              tmp_path):
    cluster = slurm_env
    exp = _experiment(experiment, tmp_path, wait="5m")
    slurm = SlurmCommands(LocalRunner(cluster.env))
    proc, preemptor = None, None
    try:
        proc, seen, first_lease, first_job, preemptor = _start_and_preempt(exp, cluster, slurm)
        seen += wait_for_line(proc, "fleet: recover:", timeout=120)
        assert "PREEMPTED" in seen.splitlines()[-1], seen[-3000:]   # the reason, in the one line that says so
        seen += wait_for_line(proc, "pending", timeout=120)          # attempt 2 waits for capacity
        _scancel(cluster, preemptor)                                 # capacity returns
        out, _ = proc.communicate(timeout=300)
    finally:
        if preemptor:
            _scancel(cluster, preemptor)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate()
    out = seen + out
    summary = _summary(out)
    assert summary["status"] == "succeeded" and summary["attempt"] == 2, out[-4000:]
    first, second = summary["attempts"]
    assert first["machines_lost"] and first["status"] == "error" and first["lease_id"] == first_lease, first
    assert f"Slurm ended job {first_job} under the run: PREEMPTED" in first["message"], first["message"]
    assert second["status"] == "succeeded" and second["lease_id"] != first_lease
    resumed_from = int(out.split("[0] rank 0 attempt 2 resumed 1 from ")[1].split()[0])
    assert 0 < resumed_from < 80, out[-4000:]   # from its last uploaded checkpoint
    assert "rank 0 finished at 80" in out
    assert json.loads(run_fleet(["status", "--json"], cwd=exp).stdout)["leases"] == []
    _nothing_queued(slurm)
    assert {j.job_id: j.state for j in slurm.queue()}.get(first_job) in (None, JobState.PREEMPTED)


def test_a_preempted_run_with_no_nodes_back_within_its_wait_ends_naming_preempted(experiment, slurm_env, fleet_home,
                                                                                 tmp_path):
    cluster = slurm_env
    exp = _experiment(experiment, tmp_path, wait="15s")
    slurm = SlurmCommands(LocalRunner(cluster.env))
    proc, preemptor = None, None
    try:
        proc, seen, first_lease, first_job, preemptor = _start_and_preempt(exp, cluster, slurm)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate()
        if preemptor:
            _scancel(cluster, preemptor)
    out = seen + out
    summary = _summary(out)
    assert summary["status"] == "error" and proc.returncode != 0, out[-4000:]
    assert "PREEMPTED" in summary["message"] and "not resumed" in summary["message"], summary["message"]
    assert "--resume" in summary["message"]   # its last checkpoint is in the store, and how to use it
    [first] = summary["attempts"]
    assert first["lease_id"] == first_lease and "PREEMPTED" in first["message"], first
    assert json.loads(run_fleet(["status", "--json"], cwd=exp).stdout)["leases"] == []
    _nothing_queued(slurm)
