"""A spot interruption in the AWS sandbox (moto + loopback sshd machines): the sandbox serves the
reclaim notice in the instance's metadata, then terminates the instance and kills its machine.
The run checkpoints on the notice, resumes on new spot machines from the last checkpoint and
finishes with the right step count on FLEET_ATTEMPT=2; nothing is left running."""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.conftest import FLEET, processes_under
from tests.e2e.test_aws_sandbox import _instances, sandbox  # noqa: F401  (the module's sandbox fixture)
from tests.e2e.test_checkpoints import TRAIN

pytestmark = pytest.mark.timeout(300)


def _wait(proc: subprocess.Popen, needle: str, seen: list[str], timeout: float = 150) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return
    proc.kill()
    raise AssertionError(f"never saw {needle!r}: {''.join(seen)[-3000:]}")


def test_spot_notice_checkpoints_and_resumes_on_new_machines(sandbox, tmp_path):  # noqa: F811
    import boto3
    from fleet.providers.aws.sandbox import Sandbox
    env, home = sandbox
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "train.py").write_text(TRAIN)
    (exp / "fleet.toml").write_text(
        'project = "spot"\nprovider = "aws"\ntemplate = "aws-1gpu"\nmax_duration = "10m"\n'
        'command = "python train.py 60 0.1"\nrecovery = "spot"\nmax_restarts = 2\n')
    proc = subprocess.Popen([FLEET, "up", "--gpus", "2", "--json"], cwd=exp, env={**env, "FLEET_GRACE": "10"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    try:
        for rank in (0, 1):
            if f"] rank {rank} attempt 1" not in "".join(seen):
                _wait(proc, f"] rank {rank} attempt 1", seen)
        running = [i for i in _instances(env) if i["State"]["Name"] == "running"]
        assert len(running) == 2 and all(i.get("InstanceLifecycle") == "spot" for i in running), running
        victim = running[0]["InstanceId"]
        ec2 = boto3.client("ec2", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                           aws_access_key_id="sandbox", aws_secret_access_key="sandbox")
        reclaim = Sandbox(root=home / "aws-sandbox" / "machines").interrupt(victim, ec2, after_s=8)
        out, _ = proc.communicate(timeout=240)
        reclaim.join(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(seen) + out
    summary = json.loads(out[out.index("\n{") + 1:])
    assert summary["status"] == "succeeded", out[-4000:]
    assert summary["attempt"] == 2, summary
    first, second = summary["attempts"]
    assert first["machines_lost"] and "spot interruption notice" in first["message"], first
    assert "spot interruption notice for machine" in out
    for rank in (0, 1):
        resumed = int(out.split(f"[{rank}] rank {rank} attempt 2 resumed 1 from ")[1].split()[0])
        assert resumed > 0, out[-4000:]      # from the checkpoint written on the notice's SIGTERM
        assert f"rank {rank} finished at 60" in out
    states = {i["InstanceId"]: i["State"]["Name"] for i in _instances(env)}
    assert states[victim] == "terminated"
    assert all(s in ("terminated", "shutting-down") for s in states.values()), states   # nothing left running
    assert not [line for line in processes_under(home) if "sshd" in line and "aws-sandbox/machines" in line]


def test_a_restart_the_budget_cannot_pay_is_not_started(sandbox, tmp_path):  # noqa: F811
    """Priced so that EC2's 60 s minimum for the two machines of a second attempt ($3.33 at
    $100/h each) is more than the $3.40 budget has left after the first attempt, whose machines
    ran for at least the 1.3 s ($0.07) that lease, staging and the command's first line take."""
    import boto3
    from fleet.providers.aws.sandbox import Sandbox
    env, home = sandbox
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "train.py").write_text(TRAIN)
    (exp / "fleet.toml").write_text(
        'project = "spot-budget"\nprovider = "aws"\ntemplate = "aws-1gpu"\nmax_duration = "10m"\n'
        'command = "python train.py 600 0.1"\nrecovery = "spot"\nbudget = 3.40\n'
        '[prices]\n"g4dn.xlarge" = 100\n"g6.xlarge" = 100\n"g5.xlarge" = 100\n')
    before = {i["InstanceId"] for i in _instances(env)}
    proc = subprocess.Popen([FLEET, "up", "--gpus", "2", "--json"], cwd=exp, env={**env, "FLEET_GRACE": "10"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    try:
        for rank in (0, 1):
            if f"] rank {rank} attempt 1" not in "".join(seen):
                _wait(proc, f"] rank {rank} attempt 1", seen)
        mine = [i for i in _instances(env) if i["InstanceId"] not in before and i["State"]["Name"] == "running"]
        assert len(mine) == 2, mine
        ec2 = boto3.client("ec2", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                           aws_access_key_id="sandbox", aws_secret_access_key="sandbox")
        reclaim = Sandbox(root=home / "aws-sandbox" / "machines").interrupt(mine[0]["InstanceId"], ec2, after_s=8)
        out, _ = proc.communicate(timeout=240)
        reclaim.join(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(seen) + out
    summary = json.loads(out[out.index("\n{") + 1:])
    assert summary["status"] == "budget-stopped" and summary["exit_code"] == 11, out[-4000:]
    assert "not resumed after attempt 1" in summary["message"] and "--resume" in summary["message"], summary
    assert summary["checkpoints"], summary                        # its last checkpoint is in the store
    assert [a["attempt"] for a in summary["attempts"]] == [1]
    after = [i for i in _instances(env) if i["InstanceId"] not in before]
    assert len(after) == 2, after                                  # nothing relaunched
    assert all(i["State"]["Name"] in ("terminated", "shutting-down") for i in after), after
