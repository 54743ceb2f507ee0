"""`fleet up --resume RUN` resumes a run once, and only its owner does (red-team findings): two
resumes at once started two attempts on two leases, both billed; resuming an attempt that a later
one had already continued restarted from the older checkpoint; another user's run was resumed as
theirs."""
from __future__ import annotations

import json
import signal

import pytest

from tests.conftest import run_fleet, start_fleet_up, wait_for_line
from tests.e2e.test_checkpoints import _up, _write

pytestmark = pytest.mark.timeout(300)


def test_a_run_is_resumed_once_and_only_by_its_owner(experiment, fleet_home):
    _write(experiment)
    first = _up(experiment)
    assert first["status"] == "succeeded", first["_stderr"]
    run = first["run_id"]

    other = run_fleet(["up", "-y", "--resume", run], cwd=experiment, env={"FLEET_USER": "mallory"})
    assert other.returncode == 2 and f"run {run} is " in other.stderr and "not mallory's" in other.stderr, \
        other.stderr

    held = start_fleet_up(experiment, ["--resume", run, "--", "python", "train.py", "100000", "0.05"],
                          env={"FLEET_GRACE": "20"})
    try:
        wait_for_line(held, "rank 0 attempt 2 resumed 1", timeout=120)  # the first resume runs …
        twice = run_fleet(["up", "-y", "--resume", run], cwd=experiment)   # … a second one is refused
        assert twice.returncode == 2 and f"run {run} is already being resumed" in twice.stderr, twice.stderr
        leases = json.loads(run_fleet(["status", "--json"], cwd=experiment).stdout)["leases"]
        assert len(leases) == 1, leases                                # one set of machines billed
    finally:
        held.send_signal(signal.SIGINT)                                # stopped: its checkpoint is uploaded
        held.communicate(timeout=120)
        run_fleet(["down", "--all"], cwd=experiment)
    second = json.loads(run_fleet(["runs", "ls", "--json"], cwd=experiment).stdout)["runs"][0]["run_id"]
    again = run_fleet(["up", "-y", "--resume", run], cwd=experiment)       # its checkpoint is attempt 2's now
    assert again.returncode == 2 and f"was already resumed, as run {second}" in again.stderr, again.stderr
    assert f"fleet up --resume {second}" in again.stderr


def test_resuming_on_fewer_machines_says_which_nodes_start_without_their_checkpoint(experiment, fleet_home):
    _write(experiment)
    first = _up(experiment, "--gpus", "2")
    assert first["status"] == "succeeded" and set(first["checkpoints"]) == {"0", "1"}, first["_stderr"]
    fewer = _up(experiment, "--gpus", "1", "--resume", first["run_id"])
    assert fewer["status"] == "succeeded", fewer["_stderr"]
    assert "left checkpoints of 2 node(s); this attempt has 1 machine(s), so node(s) 1 start without theirs" \
        in fewer["_stderr"], fewer["_stderr"]
    assert "restoring the latest checkpoint of 1 node(s) (attempt 2)" in fewer["_stderr"]
