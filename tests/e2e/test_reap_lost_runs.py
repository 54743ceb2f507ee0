"""A controller killed mid-run on AWS (the no-account sandbox): `fleet status` calls its lease
orphaned once the heartbeat deadline passed, and `fleet reap` ends its instances, releases the
lease and ends the run as `lost` with a record saying why and what was billed (issue 13: "`down`
and the reaper end such runs as `lost`")."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from fleet.providers.aws.reap import TAG_DEADLINE
from tests.conftest import processes_under, run_fleet, start_fleet_up, wait_for_line, wait_until
from tests.e2e.test_aws_sandbox import _instances, sandbox  # noqa: F401 — the sandbox fixture
from tests.e2e.test_process_ownership import HAS_CGROUP

pytestmark = pytest.mark.timeout(300)


def _status(exp, env) -> list[dict]:
    proc = run_fleet(["status", "--json"], cwd=exp, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["leases"]


def _mine(env, lease_id: str) -> list[dict]:
    return [i for i in _instances(env) if {"Key": "fleet:lease", "Value": lease_id} in i.get("Tags", [])]


def test_reap_ends_a_dead_controllers_instances_and_its_run_as_lost(sandbox, tmp_path):  # noqa: F811
    env, home = sandbox
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "fleet.toml").write_text('project = "aws-lost"\nprovider = "aws"\ntemplate = "aws-4gpu"\n'
                                    'max_duration = "10m"\ncommand = "true"\n')
    proc = start_fleet_up(exp, ["--gpus", "4", "--", "sh", "-c", "echo started; sleep 600"],
                          env={**env, "FLEET_HEARTBEAT_TTL": "5"})
    try:
        wait_for_line(proc, "] started", timeout=240)
        [lease] = _status(exp, env)
        [run] = lease["runs"]
        lease_id, run_id = lease["id"], run["id"]
        # A sandbox machine is a loopback sshd: a cgroup unit of its own where fleet may write cgroup v2.
        assert [m["isolation"] for m in lease["machines"]] == ["cgroup" if HAS_CGROUP else "pids"], lease
        proc.kill()                      # SIGKILL: no finally-block, no signal handler, no more beats
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # Nobody extends the lease any more: once its deadline passed, status says so.
    assert wait_until(lambda: _status(exp, env)[0]["health"] == "orphaned", 60), _status(exp, env)
    # The last beat's deadline tag, as the reaper reads it after its grace has passed too.
    import boto3
    ec2 = boto3.client("ec2", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                       aws_access_key_id="sandbox", aws_secret_access_key="sandbox")
    past = (datetime.now(timezone.utc) - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    ids = [i["InstanceId"] for i in _mine(env, lease_id)]
    assert ids
    ec2.create_tags(Resources=ids, Tags=[{"Key": TAG_DEADLINE, "Value": past}])

    reap = run_fleet(["reap", "--json"], cwd=exp, env=env, timeout=120)
    assert reap.returncode == 0, reap.stderr
    body = json.loads(reap.stdout)
    assert sorted(a["instance_id"] for a in body["actions"]) == sorted(ids)
    assert all("heartbeat deadline" in a["reason"] for a in body["actions"]), body
    assert body["released_leases"] == [lease_id], body
    assert f"run {run_id} lost" in reap.stderr, reap.stderr
    assert {i["State"]["Name"] for i in _mine(env, lease_id)} <= {"shutting-down", "terminated"}

    records = json.loads(run_fleet(["runs", "ls", "--json"], cwd=exp, env=env).stdout)["runs"]
    [rec] = [r for r in records if r["run_id"] == run_id]
    assert rec["status"] == "lost" and rec["lease_id"] == lease_id and rec["ended_at"], rec
    assert "controller" in rec["reason"] and "gone" in rec["reason"], rec["reason"]
    assert "released by `fleet reap`" in rec["reason"], rec["reason"]
    assert "$" in rec["reason"] and "ledger" in rec["reason"], rec["reason"]
    assert run_fleet(["audit", "--verify"], cwd=exp, env=env).returncode == 0
    assert _status(exp, env) == []
    # A second pass finds nothing, and never ends the run twice.
    again = run_fleet(["reap", "--json"], cwd=exp, env=env)
    assert again.returncode == 0 and json.loads(again.stdout)["actions"] == [] and "lost" not in again.stderr
    assert wait_until(lambda: not processes_under(home / "aws-sandbox" / "machines"), 30), \
        processes_under(home / "aws-sandbox" / "machines")
