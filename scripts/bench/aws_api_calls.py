#!/usr/bin/env python3
"""EC2 API calls made to lease and release N machines on AWS (N = 1, 8, 64), counted with
botocore's event hooks (`before-call.ec2.*`) against a local moto server, in one run, beside a
reference: the one-call-per-machine way (RunInstances per machine, a waiter per machine,
TerminateInstances per machine, a waiter per machine).

    python scripts/bench/aws_api_calls.py [--json]

Target: fleet's count is constant in N (the same for 64 machines as for 1). Our figure per N also
comes with the ratio to the reference. The instance-type catalogue is read once before measuring
(it is cached on disk for a week). moto's instances are "running" at the first look, so waits
here cost one describe; on AWS a wait polls with back-off, still one call per round for all N.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

SIZES = (1, 8, 64)


class _NoSSH:
    """Address map that connects nothing: the bench counts API calls, not SSH."""

    def bind(self, instance_id, *_a, **_kw):
        return {"host": "127.0.0.1", "port": 9, "user": "nobody", "workdir": "/", "python": "python3", "dir": ""}

    def unbind_lease(self, _lease_id):
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _counter(ec2):
    calls: list[str] = []
    ec2.meta.events.register("before-call.ec2.*", lambda model, **_: calls.append(model.name))
    return calls


def ours(provider, n: int) -> tuple[int, int]:
    from fleet.plan import make_plan
    calls = _counter(provider.ec2)
    plan = make_plan(provider="aws", template=provider.templates()["aws-1gpu"], gpus=n, max_duration_s=600,
                     heartbeat_ttl_s=60, project="bench", user="bench")
    before = len(calls)
    lease = provider.lease(plan, f"l-bench-{n}", 60)
    leased = len(calls) - before
    provider.release(lease)
    released = len(calls) - before - leased
    provider.ec2.meta.events.unregister("before-call.ec2.*")   # drop our counter before the next N
    return leased, released


def reference(ec2, outputs, n: int) -> tuple[int, int]:
    """One machine at a time, as a straightforward script would do it."""
    calls = _counter(ec2)
    tpl = outputs.template("aws-1gpu")
    subnet = next(iter(outputs.subnets.values()))
    ids = []
    for _ in range(n):
        inst = ec2.run_instances(MinCount=1, MaxCount=1, LaunchTemplate={"LaunchTemplateId": tpl.launch_template_id},
                                 InstanceType=tpl.instance_types[0], SubnetId=subnet)["Instances"][0]
        ids.append(inst["InstanceId"])
        ec2.get_waiter("instance_running").wait(InstanceIds=[inst["InstanceId"]], WaiterConfig={"Delay": 0.05})
    leased = len(calls)
    for iid in ids:
        ec2.terminate_instances(InstanceIds=[iid])
        ec2.get_waiter("instance_terminated").wait(InstanceIds=[iid], WaiterConfig={"Delay": 0.05})
    ec2.meta.events.unregister("before-call.ec2.*")
    return leased, len(calls) - leased


def measure() -> list[dict]:
    from moto.server import ThreadedMotoServer
    import logging
    logging.getLogger("werkzeug").setLevel(logging.ERROR)      # no per-request log lines
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    home = tempfile.mkdtemp(prefix="fleet-bench-aws-")
    os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                      AWS_EC2_METADATA_DISABLED="true", FLEET_HOME=home)
    try:
        import boto3
        from fleet.providers.aws.outputs import load_outputs
        from fleet.providers.aws.provider import AWSProvider
        from fleet.providers.aws.sandbox import create_stack
        outputs = load_outputs(create_stack())
        provider = AWSProvider(outputs=outputs, sandbox=_NoSSH(), sleep=lambda s: None)
        provider.catalog()                                   # warm the on-disk catalogue once
        ec2_ref = boto3.client("ec2", region_name="us-east-1")
        rows = []
        for n in SIZES:
            lease_calls, release_calls = ours(provider, n)
            ref_lease, ref_release = reference(ec2_ref, outputs, n)
            rows.append({"n": n, "ours": lease_calls + release_calls, "ours_lease": lease_calls,
                         "ours_release": release_calls, "reference": ref_lease + ref_release})
        return rows
    finally:
        server.stop()
        import shutil
        shutil.rmtree(home, ignore_errors=True)


def figures(rows: list[dict]) -> list[dict]:
    base = rows[0]["ours"]
    out = []
    for r in rows:
        out.append({"figure": f"ec2_calls_lease_release_n{r['n']}", "value": r["ours"], "unit": "calls",
                    "target": f"== {base} (N=1)", "met": r["ours"] == base})
        out.append({"figure": f"ec2_calls_vs_one_per_machine_n{r['n']}", "value": round(r["ours"] / r["reference"], 4),
                    "unit": "ratio", "target": "informational", "met": True,
                    "reference_calls": r["reference"]})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description="EC2 API calls to lease+release N machines")
    parser.add_argument("--json", action="store_true", help="print a JSON list of figures")
    args = parser.parse_args()
    rows = measure()
    result = figures(rows)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{'N':>4} {'fleet lease':>12} {'fleet release':>14} {'fleet total':>12} {'one-per-machine':>16} {'ratio':>7}")
        for r in rows:
            print(f"{r['n']:>4} {r['ours_lease']:>12} {r['ours_release']:>14} {r['ours']:>12} {r['reference']:>16} "
                  f"{r['ours'] / r['reference']:>7.3f}")
        constant = all(r["ours"] == rows[0]["ours"] for r in rows)
        print(f"target: fleet's calls constant in N → {'met' if constant else 'MISSED'}")
    return 0 if all(f["met"] for f in result) else 1


if __name__ == "__main__":
    sys.exit(main())
