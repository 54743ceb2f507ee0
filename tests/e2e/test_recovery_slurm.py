"""Recovery on Slurm, against the real test cluster (tests/fixtures/slurm.py): the node a training's
allocation runs on fails mid-run (`scontrol update state=down`: Slurm ends the job NODE_FAIL and
requeues it); the run sees the loss (its SSH channel drops, or the provider's squeue watch reports
NODE_FAIL, whichever comes first), and with `recovery = "always"` the run resumes
in a new allocation on the other node from its last checkpoint, at attempt 2, and finishes with the
right step count; no job of it is left in the queue."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from fleet.providers.slurm.commands import LocalRunner, SlurmCommands
from fleet.providers.slurm.parsing import JobState
from tests.conftest import run_fleet, start_fleet_up, wait_for_line, wait_until
from tests.e2e.test_checkpoints import TRAIN_HELD_IN_ATTEMPT_1

pytestmark = pytest.mark.timeout(420)


def _scontrol(cluster, *args: str) -> None:
    done = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **cluster.env})
    assert done.returncode == 0, done.stderr


def _node_state(cluster, node: str) -> str:
    done = subprocess.run(["sinfo", "-h", "-n", node, "-p", cluster.partition, "-o", "%T"], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **cluster.env})
    return done.stdout.strip()


def _bring_back(cluster, node: str) -> None:
    """The failed node rejoins (the session's other tests need it), whatever state it reached."""
    if "down" in _node_state(cluster, node) or "drain" in _node_state(cluster, node):
        _scontrol(cluster, "update", f"nodename={node}", "state=resume")
    assert wait_until(lambda: _node_state(cluster, node).rstrip("*") in ("idle", "mixed", "allocated"), 60), \
        _node_state(cluster, node)


def _experiment(experiment: Path, tmp_path: Path) -> Path:
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    (experiment / "train.py").write_text(TRAIN_HELD_IN_ATTEMPT_1)   # attempt 1 is still running when its machine goes
    (experiment / "fleet.toml").write_text(
        'project = "t"\ncommand = "python3 train.py 80 0.1"\nprovider = "slurm"\ntemplate = "slurm-1gpu"\n'
        'max_duration = "10m"\ncheckpoint_interval = "1s"\nrecovery = "always"\nmax_restarts = 2\n\n'
        f'[slurm]\nworkdir = "{nodes}"\nprice_per_gpu_hour = 2\npoll = 0.5\n')
    return experiment


def test_a_node_failure_resumes_the_run_on_another_node_from_its_checkpoint(experiment, slurm_env, fleet_home,
                                                                             tmp_path):
    cluster = slurm_env
    exp = _experiment(experiment, tmp_path)
    slurm = SlurmCommands(LocalRunner(cluster.env))
    failed_node = None
    proc = start_fleet_up(exp, ["--gpus", "1", "--json"], env={"FLEET_GRACE": "10"})
    try:
        seen = wait_for_line(proc, "attempt 1", timeout=180)
        seen += wait_for_line(proc, "fleet: checkpoint:", timeout=60)   # a periodic upload happened
        [lease] = json.loads(run_fleet(["status", "--json"], cwd=exp).stdout)["leases"]
        [job] = [j for j in slurm.queue() if j.comment == f"fleet:lease={lease['id']}"]
        [failed_node] = job.nodes
        _scontrol(cluster, "update", f"nodename={failed_node}", "state=down", "reason=fleet-test-node-fail")
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if failed_node:
            _bring_back(cluster, failed_node)
    out = seen + out
    summary = json.loads(out[out.index("\n{") + 1:])
    assert summary["status"] == "succeeded" and summary["attempt"] == 2, out[-4000:]
    first, second = summary["attempts"]
    assert first["machines_lost"] and first["status"] == "error", first
    # Whichever sees it first: the step's SSH channel dropping, or the provider's squeue watch.
    assert "lost" in first["message"] or "Slurm ended job" in first["message"], first["message"]
    assert second["status"] == "succeeded" and second["lease_id"] != first["lease_id"]
    assert "[0] rank 0 attempt 2 resumed 1 from " in out, out[-4000:]
    resumed_from = int(out.split("[0] rank 0 attempt 2 resumed 1 from ")[1].split()[0])
    assert 0 < resumed_from < 80, out[-4000:]   # from its last uploaded checkpoint
    assert "rank 0 finished at 80" in out
    assert json.loads(run_fleet(["status", "--json"], cwd=exp).stdout)["leases"] == []
    live = (JobState.PENDING, JobState.CONFIGURING, JobState.RUNNING, JobState.SUSPENDED, JobState.COMPLETING)
    assert wait_until(lambda: not [j for j in slurm.queue() if j.comment.startswith("fleet:lease=")
                                   and j.state in live], 60), slurm.queue()   # ended ones linger in squeue
    states = {j.comment.removeprefix("fleet:lease="): j.state for j in slurm.queue()}
    assert states.get(first["lease_id"]) in (None, JobState.NODE_FAIL, JobState.CANCELLED), states
