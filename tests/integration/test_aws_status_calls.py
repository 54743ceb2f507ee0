"""`fleet status` on AWS leases makes a constant number of EC2 calls however many leases there are
(one DescribeInstances for all of them), counted by a moto server that sees every call of every
process (scripts/bench/_moto.py), and still reports every lease's machine as EC2 does. What EC2
said is remembered for a minute: a status within it asks EC2 nothing and shows that answer with
its age; `--refresh` asks now."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import FLEET, REPO

pytest.importorskip("moto.server", reason="moto[server] is not installed")
sys.path.insert(0, str(REPO / "scripts" / "bench"))
from _moto import aws_env, counting_moto  # noqa: E402
from status_scale import moto_instances, seed  # noqa: E402

pytestmark = pytest.mark.timeout(180)


def _fleet(home: Path, endpoint: str, *args: str) -> str:
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("FLEET_", "AWS_"))}
    env.update(FLEET_HOME=str(home), FLEET_STATE_URL=f"sqlite:///{home / 'state.db'}", FLEET_USER="user0",
               **aws_env(endpoint))
    proc = subprocess.run([FLEET, "status", "--all-users", *args], env=env, cwd=home, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


def _status(home: Path, endpoint: str, *args: str) -> list[dict]:
    return json.loads(_fleet(home, endpoint, "--json", *args))["leases"]


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

        # An instance EC2 ended: within the minute, status shows what EC2 said before, asking nothing,
        # and says how old that is once it is; --refresh asks and shows it gone, the others running.
        import boto3
        boto3.client("ec2", region_name="us-east-1").terminate_instances(InstanceIds=[ids[1]])
        counter.reset()
        states = {v["id"]: v["machines"][0]["state"] for v in _status(tmp_path / "home-3", endpoint)}
        assert states == {"l-bench-00000": "running", "l-bench-00001": "running", "l-bench-00002": "running"}
        assert counter.total("ec2") == 0, counter.snapshot()
        time.sleep(1.1)
        assert "fleet status --refresh" in _fleet(tmp_path / "home-3", endpoint)
        states = {v["id"]: v["machines"][0]["state"] for v in _status(tmp_path / "home-3", endpoint, "--refresh")}
        assert states == {"l-bench-00000": "running", "l-bench-00001": "gone", "l-bench-00002": "running"}
        assert counter.snapshot()[("ec2", "DescribeInstances")] == 1
        # ... and what the refresh heard is what the next status shows.
        states = {v["id"]: v["machines"][0]["state"] for v in _status(tmp_path / "home-3", endpoint)}
        assert states["l-bench-00001"] == "gone" and counter.snapshot()[("ec2", "DescribeInstances")] == 1
