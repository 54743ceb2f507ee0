"""Sessions share what botocore reads from disk (fleet/boto_sessions.py): a process making several
AWS clients parses EC2's service model once, not once per client (0.1-0.25 s of CPU each), while
credentials stay per session."""
from __future__ import annotations

import json
import os
import subprocess
import sys

COUNT_READS = r"""
import json, sys
import botocore.loaders
reads = []
real = botocore.loaders.JSONFileLoader.load_file
def counting(self, file_path, *a, **k):
    reads.append(file_path)
    return real(self, file_path, *a, **k)
botocore.loaders.JSONFileLoader.load_file = counting
from fleet.providers.aws.session import make_client
from fleet.providers.aws.pricing import pricing_client
clients = [make_client("us-east-1"), make_client("eu-west-1"), make_client("us-east-1")]
pricing_client()
ec2_models = [p for p in reads if "/ec2/" in p and p.endswith("/service-2")]
endpoints = [p for p in reads if p.rstrip("/").endswith(("endpoints", "endpoints.json"))]
print(json.dumps({"ec2": len(ec2_models), "endpoints": len(endpoints),
                  "regions": [c.meta.region_name for c in clients]}))
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_EC2_METADATA_DISABLED="true",
               AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull, **extra)
    return env


def test_three_ec2_clients_and_a_pricing_client_read_the_ec2_model_and_endpoints_once():
    proc = subprocess.run([sys.executable, "-c", COUNT_READS], capture_output=True, text=True, timeout=120,
                          env=_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = json.loads(proc.stdout)
    assert seen["regions"] == ["us-east-1", "eu-west-1", "us-east-1"]
    assert seen["ec2"] == 1, f"EC2's service model was parsed {seen['ec2']} times for 3 clients"
    assert seen["endpoints"] <= 1, f"the endpoint list was parsed {seen['endpoints']} times"


def test_each_session_reads_the_credentials_of_its_moment(monkeypatch):
    from fleet.boto_sessions import new_session
    for key, value in _env().items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    assert new_session().get_credentials().access_key == "testing"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "rotated")     # a refreshed login between two clients
    assert new_session().get_credentials().access_key == "rotated"
    assert new_session(region_name="eu-west-1").region_name == "eu-west-1"


def test_the_shared_loader_does_not_grow_with_every_session():
    from fleet import boto_sessions
    boto_sessions.new_session()
    before = list(boto_sessions._loader.search_paths)
    for _ in range(50):
        boto_sessions.new_session()
    assert boto_sessions._loader.search_paths == before
