#!/usr/bin/env python3
"""AWS API calls made to lease and release N machines (N = 1, 8, 64), counted by the server.

A local moto server counts every signed request it answers (scripts/bench/_moto.py), whichever
boto3 client, session or process made it — EC2, and any other service fleet touches (STS, SSM,
S3, IAM) — so calls of a client the benchmark did not know about are counted too. Beside it, a
reference in the same run: the one-call-per-machine way (RunInstances per machine, a waiter per
machine, TerminateInstances per machine, a waiter per machine), counted the same way.

The provider is fleet's own (`fleet.providers.get_provider("aws")`) with the stack outputs of a
sandbox stack made in moto and an address map that connects nothing (calls, not SSH, are counted).
The instance-type catalogue is read once before measuring (cached on disk for a week). Counts are
deterministic, so one sample per N is the figure (moto's instances are "running" at the first
look; on AWS a wait polls with back-off, one call per round for all N).

Target: fleet's EC2 calls to lease + release are constant in N (64 machines = 1 machine). Calls
of every service and the ratio to the reference are informative (met null).

    python scripts/bench/aws_api_calls.py [--quick] [--json]

--quick: N = 1 and 8 only.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (REPO, bench_parser, emit, exit_code, failed_row, json_stdout, load_row, row,  # noqa: E402
                     say)
from _moto import counting_moto  # noqa: E402

sys.path.insert(0, str(REPO))
SIZES = (1, 8, 64)


class NoSSH:
    """Address map that connects nothing: the bench counts API calls, not SSH."""

    def bind(self, instance_id, *_a, **_kw):
        return {"host": "127.0.0.1", "port": 9, "user": "nobody", "workdir": "/nonexistent", "python": "python3",
                "dir": ""}

    def unbind_lease(self, _lease_id):
        pass


def ours(provider, counter, n: int) -> dict[str, int]:
    from fleet.plan import make_plan
    plan = make_plan(provider="aws", template=provider.templates()["aws-1gpu"], gpus=n, max_duration_s=600,
                     heartbeat_ttl_s=60, project="bench", user="bench")
    counter.reset()
    lease = provider.lease(plan, f"l-bench-{n}", 60)
    leased = counter.snapshot()
    counter.reset()
    provider.release(lease)
    released = counter.snapshot()
    return {"lease_ec2": sum(v for (s, _), v in leased.items() if s == "ec2"),
            "release_ec2": sum(v for (s, _), v in released.items() if s == "ec2"),
            "all": sum(leased.values()) + sum(released.values()),
            "other": sorted({f"{s}:{a}" for (s, a) in (leased + released) if s != "ec2"})}


def reference(ec2, outputs: dict, counter, n: int) -> int:
    """One machine at a time, as a straightforward script would do it."""
    tpl = outputs["templates"]["aws-1gpu"]
    subnet = next(iter(outputs["subnets"].values()))
    counter.reset()
    ids = []
    for _ in range(n):
        inst = ec2.run_instances(MinCount=1, MaxCount=1, LaunchTemplate={"LaunchTemplateId": tpl["launch_template_id"]},
                                 InstanceType=tpl["instance_types"][0], SubnetId=subnet)["Instances"][0]
        ids.append(inst["InstanceId"])
        ec2.get_waiter("instance_running").wait(InstanceIds=[inst["InstanceId"]], WaiterConfig={"Delay": 0.05})
    for iid in ids:
        ec2.terminate_instances(InstanceIds=[iid])
        ec2.get_waiter("instance_terminated").wait(InstanceIds=[iid], WaiterConfig={"Delay": 0.05})
    return counter.total()


def measure(sizes: tuple[int, ...]) -> list[dict]:
    import os
    home = tempfile.mkdtemp(prefix="fleet-bench-aws-")
    os.environ["FLEET_HOME"] = home
    rows: list[dict] = []
    try:
        with counting_moto() as (_endpoint, counter):
            import boto3
            from fleet.providers import get_provider
            from fleet.providers.aws.sandbox import create_stack
            stack = create_stack()
            outputs = stack["fleet"]
            provider = get_provider("aws", outputs=stack, sandbox=NoSSH(), sleep=lambda s: None)
            provider.catalog()                                   # warm the on-disk catalogue once
            ec2_ref = boto3.client("ec2", region_name="us-east-1")
            base = None
            for n in sizes:
                try:
                    got = ours(provider, counter, n)
                except Exception as exc:  # noqa: BLE001 — a failed lease is a failed figure
                    say(f"N={n}: fleet's lease/release failed: {type(exc).__name__}: {exc}")
                    rows.append(failed_row(f"EC2 calls, lease + release of {n} machine(s)", "calls",
                                           f"{type(exc).__name__}: {exc}", "== (N=1)"))
                    continue
                ref = reference(ec2_ref, outputs, counter, n)
                total_ec2 = got["lease_ec2"] + got["release_ec2"]
                base = total_ec2 if base is None else base
                say(f"N={n:>3}: fleet EC2 calls lease {got['lease_ec2']}, release {got['release_ec2']}; "
                    f"all services {got['all']} (other: {', '.join(got['other']) or 'none'}); "
                    f"one-per-machine reference {ref}")
                rows.append(row(f"EC2 calls, lease + release of {n} machine(s)", total_ec2, "calls",
                                f"== {base}", lease=got["lease_ec2"], release=got["release_ec2"]))
                rows.append(row(f"AWS calls of every service, {n} machine(s)", got["all"], "calls",
                                other_services=got["other"] or None))
                rows.append(row(f"calls vs one-call-per-machine reference, {n} machine(s)",
                                round(got["all"] / ref, 4), "ratio", reference_calls=ref))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return rows


def main() -> int:
    parser = bench_parser(__doc__.splitlines()[0], samples=1)
    args = parser.parse_args()
    with json_stdout(args.json) as out:
        rows = [load_row()]
        try:
            rows += measure(SIZES[:2] if args.quick else SIZES)
        except Exception as exc:  # noqa: BLE001 — an environment that cannot measure is not a met target
            say(f"aws_api_calls: not measured: {type(exc).__name__}: {exc}")
            rows.append(failed_row("EC2 calls, lease + release", "calls", f"{type(exc).__name__}: {exc}",
                                   "== (N=1)"))
        rows.append(load_row("at end"))
        emit(rows, as_json=args.json, out=out)
    return exit_code(rows)


if __name__ == "__main__":
    sys.exit(main())
