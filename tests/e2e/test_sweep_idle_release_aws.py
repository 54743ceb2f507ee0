"""Giving back idle pool machines on AWS (through the no-account sandbox): 3 trials, 2 at a time on
2 instances, the first much longer. The instance with no trial left is terminated while the first
still runs (EC2 says terminated, its sandbox machine is gone, `fleet status` lists one machine), and
the sweep finishes on the other."""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import FLEET, run_fleet, wait_until
from tests.e2e import test_aws_capacity_wait_cli as capacity_e2e

pytestmark = pytest.mark.timeout(420)
sandbox = capacity_e2e.sandbox      # the same no-account sandbox fixture (module scope: one here)


def _instances(env) -> dict[str, str]:
    import boto3
    ec2 = boto3.client("ec2", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                       aws_access_key_id="sandbox", aws_secret_access_key="sandbox")
    return {i["InstanceId"]: i["State"]["Name"] for r in ec2.describe_instances()["Reservations"]
            for i in r["Instances"] if {"Key": "fleet:project", "Value": "aws-shrink"} in i.get("Tags", [])}


def test_an_idle_instance_is_terminated_while_the_long_trial_runs(sandbox, tmp_path):
    env, home = sandbox
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "fleet.toml").write_text('project = "aws-shrink"\nprovider = "aws"\ntemplate = "aws-1gpu"\n'
                                    'max_duration = "10m"\ncommand = "true"\n')
    go = tmp_path / "go"
    script = (f"if [ {{x}} = 1 ]; then i=0; while [ ! -e {go} ] && [ $i -lt 1500 ]; do sleep 0.2; i=$((i+1)); "
              "done; fi; true")
    proc = subprocess.Popen([FLEET, "sweep", "--param", "x=1,2,3", "--parallel", "2", "--json", "--",
                             "sh", "-c", script], cwd=exp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    states: dict = {}

    def one_terminated() -> bool:
        states.clear()
        states.update(_instances(env))
        return list(states.values()).count("terminated") == 1 or proc.poll() is not None

    try:
        assert wait_until(one_terminated, timeout=240, interval=1.0), states
        assert proc.poll() is None, "the sweep ended before the idle instance was released"
        assert sorted(states.values()) == ["running", "terminated"], states
        gone = next(i for i, s in states.items() if s == "terminated")
        # its sandbox machine ends just after EC2 says terminated (the provider unbinds it then)
        assert wait_until(lambda: not (home / "aws-sandbox" / "machines" / gone).exists(), timeout=60)
        leases: list = []

        def one_machine_listed() -> bool:   # the state drops it once the provider's release returned
            leases[:] = json.loads(run_fleet(["status", "--json", "--refresh"], cwd=exp, env=env).stdout)["leases"]
            return len(leases) == 1 and len(leases[0]["machines"]) == 1
        assert wait_until(one_machine_listed, timeout=60, interval=1.0), leases
        assert [m["id"] for m in leases[0]["machines"]] != [gone] and proc.poll() is None
        go.write_text("")
        out, err = proc.communicate(timeout=240)
    finally:
        go.write_text("")
        if proc.poll() is None:
            proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads(out)
    assert [t["state"] for t in summary["trials"]] == ["succeeded"] * 3
    assert list(summary["released_early"]) == [gone] and summary["machines"] == 2
    assert set(_instances(env).values()) == {"terminated"}
