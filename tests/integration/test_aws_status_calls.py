"""`fleet status` on AWS leases makes a constant number of EC2 calls however many leases there are
(one DescribeInstances for all of them), counted by a moto server that sees every call of every
process (scripts/bench/_moto.py), and still reports every lease's machine as EC2 does."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FLEET, REPO

pytest.importorskip("moto.server", reason="moto[server] is not installed")
sys.path.insert(0, str(REPO / "scripts" / "bench"))
from _moto import aws_env, counting_moto  # noqa: E402
from status_scale import moto_instances, seed  # noqa: E402

pytestmark = pytest.mark.timeout(180)


def _status(home: Path, endpoint: str) -> list[dict]:
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("FLEET_", "AWS_"))}
    env.update(FLEET_HOME=str(home), FLEET_STATE_URL=f"sqlite:///{home / 'state.db'}", FLEET_USER="user0",
               **aws_env(endpoint))
    proc = subprocess.run([FLEET, "status", "--all-users", "--json"], env=env, cwd=home, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout)["leases"]


def test_status_asks_ec2_once_for_all_leases(tmp_path):
    with counting_moto() as (endpoint, counter):
        ids = moto_instances(30)
        calls = {}
        for count in (3, 30):
            home = tmp_path / f"home-{count}"
            home.mkdir()
            seed(f"sqlite:///{home / 'state.db'}", count, ids[:count])
            counter.reset()
            leases = _status(home, endpoint)
            calls[count] = counter.snapshot()
            assert len(leases) == count
            assert {m["state"] for v in leases for m in v["machines"]} == {"running"}
        assert calls[3][("ec2", "DescribeInstances")] == calls[30][("ec2", "DescribeInstances")] == 1, calls
        assert sum(n for (svc, _), n in calls[30].items() if svc == "ec2") == \
            sum(n for (svc, _), n in calls[3].items() if svc == "ec2"), calls

        # An instance EC2 ended shows as gone on its lease; the others stay running.
        import boto3
        boto3.client("ec2", region_name="us-east-1").terminate_instances(InstanceIds=[ids[1]])
        states = {v["id"]: v["machines"][0]["state"] for v in _status(tmp_path / "home-3", endpoint)}
        assert states == {"l-bench-00000": "running", "l-bench-00001": "gone", "l-bench-00002": "running"}
