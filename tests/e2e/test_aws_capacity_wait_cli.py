"""`fleet up --wait` on AWS as a user types it, through the no-account sandbox: EC2 has no capacity
(InsufficientInstanceCapacity, injected in the fleet process: tests/e2e/no_capacity/), so the lease
waits in `fleet queue` with EC2's reason instead of exit 10, and runs once capacity is back; a wait
that runs out is exit 10 in one line with nothing left running."""
from __future__ import annotations

import json
import signal
import subprocess

import pytest

from tests.conftest import FLEET, REPO, run_fleet, wait_until
from tests.e2e.test_aws_sandbox import sandbox  # noqa: F401  (the module's sandbox fixture)

pytestmark = pytest.mark.timeout(420)
INJECT = REPO / "tests" / "e2e" / "no_capacity"
REASON = "waiting for capacity: g6.12xlarge in us-east-1 (InsufficientInstanceCapacity)"


def _experiment(tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "fleet.toml").write_text('project = "aws-wait"\nprovider = "aws"\ntemplate = "aws-8gpu"\n'
                                    'max_duration = "10m"\ncommand = "echo ran on $FLEET_NUM_NODES"\n')
    return exp


def _alive(env) -> list[str]:
    import boto3
    ec2 = boto3.client("ec2", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                       aws_access_key_id="sandbox", aws_secret_access_key="sandbox")
    return [i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
            if i["State"]["Name"] != "terminated" and {"Key": "fleet:project", "Value": "aws-wait"} in i.get("Tags", [])]


def test_no_capacity_waits_in_fleet_queue_then_runs(sandbox, tmp_path):
    env, _home = sandbox
    exp = _experiment(tmp_path)
    capacity_back = tmp_path / "capacity-back"
    up_env = {**env, "PYTHONPATH": str(INJECT), "FLEET_TEST_NO_CAPACITY_UNTIL": str(capacity_back)}
    up = subprocess.Popen([FLEET, "up", "--gpus", "8", "--wait", "5m", "--json"], cwd=exp, env=up_env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    listed: list = []

    def queued() -> bool:
        proc = run_fleet(["queue", "--json"], cwd=exp, env=env)
        listed[:] = json.loads(proc.stdout)["waiting"] if proc.returncode == 0 else []
        return bool(listed) or up.poll() is not None

    try:
        assert wait_until(queued, timeout=180, interval=1.0)
        assert up.poll() is None, "fleet up ended instead of waiting"
        assert [(w["provider"], w["gpus"], w["reason"]) for w in listed] == [("aws", 8, REASON)], listed
        table = run_fleet(["queue"], cwd=exp, env=env)
        assert REASON in table.stdout
        assert _alive(env) == []                                    # nothing launched while it waits
        capacity_back.write_text("")
        out, err = up.communicate(timeout=300)
    finally:
        capacity_back.write_text("")
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
            up.communicate(timeout=120)
    assert up.returncode == 0, err[-3000:]
    summary = json.loads(out)
    assert summary["status"] == "succeeded" and summary["machines"] == 2
    assert REASON in err and "ran on 2" in err + out
    assert json.loads(run_fleet(["queue", "--json"], cwd=exp, env=env).stdout)["waiting"] == []
    assert _alive(env) == []


def test_a_wait_that_runs_out_is_exit_10_in_one_line(sandbox, tmp_path):
    env, _home = sandbox
    exp = _experiment(tmp_path)
    up_env = {**env, "PYTHONPATH": str(INJECT), "FLEET_TEST_NO_CAPACITY_UNTIL": str(tmp_path / "never")}
    up = run_fleet(["up", "--gpus", "8", "--wait", "3s"], cwd=exp, env=up_env, timeout=240)
    assert up.returncode == 10, up.stderr[-3000:]
    errors = [line for line in up.stderr.splitlines() if line.startswith("fleet: error:")]
    assert len(errors) == 1 and "waited" in errors[0] and "for capacity" in errors[0], up.stderr[-2000:]
    assert json.loads(run_fleet(["queue", "--json"], cwd=exp, env=env).stdout)["waiting"] == []
    assert _alive(env) == []
