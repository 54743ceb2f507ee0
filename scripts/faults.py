#!/usr/bin/env python3
"""The randomized fault matrix: N runs, each with a random combination of faults, from one seed.

    scripts/faults.py --runs 50 --seed 1 [--json] [--no-aws]

Local runs: `fleet up --gpus 2` as a subprocess on local sshd machines with 1–3 of: SIGKILL of the
controller at a random phase (and a random delay into it), a machine's sshd killed, the state
database held by BEGIN EXCLUSIVE, FLEET_HOME's disk filling up (tmpfs; only as root), a corrupt
store chunk. AWS runs (a moto server started here): lease + release with random throttling,
capacity and 5xx errors at the botocore boundary. Each run is judged on the providers themselves
(tests/faults/harness.py). Prints runs, faults injected, machines leaked, ledger entries lost.
Exit status 1 if anything leaked or was lost.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def local_run(rng: random.Random, root: Path, allow_disk: bool) -> dict:
    from tests.faults.harness import Sandbox
    from tests.faults.scenarios import KillController, Unavailable, random_faults, run_case
    box = Sandbox(root)
    faults = random_faults(rng, allow_disk=allow_disk)
    for f in faults:
        if isinstance(f, KillController) and rng.random() < 0.5:
            f.delay_s = round(rng.uniform(0, 0.5), 3)
    try:
        v = run_case(box, faults)
    except Unavailable as exc:
        return {"kind": "local", "faults": [f.describe() for f in faults], "skipped": str(exc)}
    return {"kind": "local", "faults": v.faults, "exit_code": v.exit_code, "machines": v.machines_seen,
            "leaked": v.leaked, "ledger_rows_lost": v.ledger.get("rows_lost", 0),
            "ledger_open_segments": v.ledger.get("open_segments", 0),
            "unbilled_machines": v.ledger.get("unbilled_machines", []), "state_left": len(v.state_left),
            "tracebacks": v.tracebacks, "errors": v.errors[-1:]}


class AwsWorld:
    """A moto server and the sandbox stack, made once for all AWS runs."""

    def __init__(self):
        import socket
        from moto.server import ThreadedMotoServer
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        import logging
        logging.getLogger("werkzeug").setLevel(logging.ERROR)   # moto's request log
        from fleet.providers.aws import moto_tags
        moto_tags.install()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.server.start()
        os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="testing",
                          AWS_SECRET_ACCESS_KEY="testing", AWS_SESSION_TOKEN="testing",
                          AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
        os.environ.pop("AWS_PROFILE", None)
        from fleet.providers.aws.outputs import load_outputs
        from fleet.providers.aws.sandbox import create_stack
        self.outputs = load_outputs(create_stack())

    def stop(self) -> None:
        self.server.stop()


def aws_run(rng: random.Random, world: AwsWorld, root: Path, n: int) -> dict:
    import pytest
    from fleet.errors import FleetError
    from fleet.plan import make_plan
    from fleet.providers.aws.provider import AWSProvider
    from tests.faults.ec2 import EC2Faults, alive_instances, fast_retries
    from tests.fixtures.aws import NoConnectAddressMap, fast_sleep
    os.environ["FLEET_HOME"] = str(root / "home")
    project, lease_id = f"faults-{n}", f"l-faults{n}"
    with pytest.MonkeyPatch.context() as mp:
        fast_retries(mp)
        provider = AWSProvider(outputs=world.outputs, sandbox=NoConnectAddressMap(), sleep=fast_sleep,
                               ready_timeout_s=20)
        from tests.faults.ec2 import KINDS
        first = rng.choice(sorted(KINDS))     # every run injects at least this one
        faults = EC2Faults(plan={"RunInstances": [KINDS[first]]}, rate=rng.uniform(0.1, 0.5), rng=rng)
        faults.attach(provider.ec2)
        gpus = 4 * rng.randint(1, 4)
        plan = make_plan(provider="aws", template=provider.templates()["aws-4gpu"], gpus=gpus, max_duration_s=600,
                         heartbeat_ttl_s=60, project=project, user="faults")
        errors, bad = [], []
        lease = None
        try:
            lease = provider.lease(plan, lease_id, 60)
        except FleetError as exc:
            errors.append(str(exc))
        except Exception as exc:  # noqa: BLE001 — a non-FleetError is exactly what this looks for
            bad.append(f"{type(exc).__name__}: {exc}")
        for _ in range(3):     # `fleet down` until it sticks; faults stay on
            try:
                provider.release(lease) if lease is not None else provider._cleanup(lease_id)
                break
            except FleetError as exc:
                errors.append(str(exc))
            except Exception as exc:  # noqa: BLE001
                bad.append(f"{type(exc).__name__}: {exc}")
        faults.detach(provider.ec2)
        left = alive_instances(project)
    return {"kind": "aws", "faults": sorted(set(faults.injected)) or ["(none drawn)"],
            "injected_calls": len(faults.injected), "machines": len(lease.machines) if lease else 0,
            "leaked": [f"instance alive after release: {i}" for i in left], "ledger_rows_lost": 0,
            "ledger_open_segments": 0, "unbilled_machines": [], "state_left": 0,
            "tracebacks": bad, "errors": errors[-1:]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None, help="recorded in the output; random if omitted")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--no-aws", action="store_true", help="local machines only (no moto server)")
    parser.add_argument("--aws-share", type=float, default=0.3, help="fraction of runs against AWS (moto)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    rng = random.Random(seed)
    allow_disk = os.geteuid() == 0
    world = None
    results = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fleet-faults-") as tmp:
        for n in range(args.runs):
            run_rng = random.Random(rng.randrange(1 << 31))
            root = Path(tmp) / f"run-{n}"
            use_aws = not args.no_aws and run_rng.random() < args.aws_share
            if use_aws and world is None:
                try:
                    world = AwsWorld()
                except Exception as exc:  # noqa: BLE001
                    print(f"faults: AWS runs disabled: {exc}", file=sys.stderr)
                    args.no_aws, use_aws = True, False
            started = time.monotonic()
            result = aws_run(run_rng, world, root, n) if use_aws else local_run(run_rng, root, allow_disk)
            result.update(run=n, seconds=round(time.monotonic() - started, 1))
            results.append(result)
            if not args.json:
                flag = "ok" if not (result.get("leaked") or result.get("ledger_rows_lost")
                                    or result.get("ledger_open_segments") or result.get("tracebacks")
                                    or result.get("state_left")) else "FAIL"
                print(f"run {n:3d} {result['kind']:5s} {flag:4s} {result['seconds']:5.1f}s "
                      f"{', '.join(result['faults'])}", flush=True)
    if world is not None:
        world.stop()
    done = [r for r in results if "skipped" not in r]
    summary = {
        "seed": seed, "runs": len(results), "skipped": len(results) - len(done),
        "faults_injected": sum(len(r["faults"]) for r in done if r["faults"] != ["(none drawn)"]),
        "faults_by_kind": dict(Counter(f.split("@")[0].split("(")[0].split("[")[0].split(":")[-1]
                                       for r in done for f in r["faults"])),
        "machines_leased": sum(r.get("machines", 0) for r in done),
        "machines_leaked": sum(len(r["leaked"]) for r in done),
        "ledger_entries_lost": sum(r["ledger_rows_lost"] + r["ledger_open_segments"] for r in done),
        "machines_unbilled": sum(len(r["unbilled_machines"]) for r in done),
        "state_left_after_down": sum(r["state_left"] for r in done),
        "tracebacks": sum(len(r["tracebacks"]) for r in done),
        "seconds": round(time.monotonic() - t0, 1),
        "failures": [r for r in done if r["leaked"] or r["ledger_rows_lost"] or r["ledger_open_segments"]
                     or r["tracebacks"] or r["state_left"] or r["unbilled_machines"]],
    }
    if args.json:
        print(json.dumps(summary | {"results": results}, indent=2))
    else:
        for key in ("seed", "runs", "skipped", "faults_injected", "faults_by_kind", "machines_leased",
                    "machines_leaked", "ledger_entries_lost", "machines_unbilled", "state_left_after_down",
                    "tracebacks", "seconds"):
            print(f"{key}: {summary[key]}")
        for r in summary["failures"]:
            print(f"  run {r['run']}: {r['faults']} leaked={r['leaked']} unbilled={r['unbilled_machines']} "
                  f"tracebacks={r['tracebacks'][:2]}")
    bad = summary["machines_leaked"] or summary["ledger_entries_lost"] or summary["tracebacks"] \
        or summary["state_left_after_down"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
