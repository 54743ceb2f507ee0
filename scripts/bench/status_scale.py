#!/usr/bin/env python3
"""`fleet status` with 1,000 live leases versus 0: on SQLite and PostgreSQL state, and on AWS.

Each figure is the median wall time of the CLI as a user runs it (a fresh process: imports, state
open, queries, provider checks, rendering), 0 leases (the reference) against 1,000 leases of one
machine each (plus one run each, as `fleet up` leaves them), interleaved, with the spread.
Target: 1,000 leases ≤ 2× the empty state.

Stores:
- sqlite, postgresql: local-provider leases whose machines are gone (no sshd per lease), so
  `describe` answers from the filesystem: fleet's own cost per lease in the state and rendering.
  The PostgreSQL server is a private one in a temporary directory, removed afterwards.
- aws: AWS leases WITH machines — each lease's machine is an instance in a local moto server,
  tagged `fleet:lease` as fleet tags them, and every machine must come back `running` (checked on
  --json: a provider call that failed silently would otherwise be measured as fast). The moto
  server counts every EC2 call it answers (scripts/bench/_moto.py). Two ways of asking, both
  measured against 0 leases, both with the same target:
  - `fleet status --refresh` asks EC2 now (one DescribeInstances for all leases); target also: EC2
    calls per refresh constant in the number of leases (1,000 leases = 10 leases). It also leaves
    what EC2 said in the state, as any status that asks does;
  - `fleet status` (the default) shows what EC2 said within the last minute (AWS's
    observed_state_ttl_s, fleet/lease_status.py): measured right after a refresh, as a user who
    ran any status within the minute has it; its EC2 calls are counted too (expected: none).
  One `fleet status` that takes longer than --status-timeout (default 300 s) ends the AWS part as
  missed, with the EC2 calls counted until then.

    python scripts/bench/status_scale.py [-n 5] [--leases 1000] [--store sqlite|postgresql|aws|all]
                                         [--quick] [--json]

--quick: 1 sample, 50 leases, sqlite and aws only. A store that cannot be measured is not met.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (REPO, bench_parser, check_samples, clean_env, emit, exit_code, failed_row,  # noqa: E402
                     fleet_argv, json_stdout, load_row, median_row, ratio_row, row, say)

sys.path.insert(0, str(REPO))
TARGET = "<= 2"
VARIANTS = {"table": ["status", "--all-users"], "json": ["status", "--all-users", "--json"]}
REFRESH = {"refresh json": ["status", "--all-users", "--json", "--refresh"]}   # AWS: ask EC2 now
SMALL = 10          # leases for the "constant in the number of leases" EC2-call comparison


def seed(url: str, leases: int, machine_ids: list[str] | None = None) -> None:
    """`leases` active leases (1 machine, 1 run each) from 4 users, as fleet writes them; AWS leases
    when `machine_ids` (their instance ids) are given, local ones otherwise."""
    from fleet.models import Lease, Machine, utcnow
    from fleet.state import open_state
    store = open_state(url)
    now = utcnow()
    try:
        with store.db.transaction():
            for i in range(leases):
                lease_id = f"l-bench-{i:05d}"
                if machine_ids:
                    mid, provider, template, slots = machine_ids[i], "aws", "aws-1gpu", (0,)
                    ref = {"region": "us-east-1", "instance_type": "g5.xlarge"}
                else:
                    mid, provider, template, slots = f"{lease_id}-n0", "local", "local-4gpu", (0, 1)
                    ref = {"dir": f"/nonexistent/{lease_id}", "sshd_pid": 0, "simulated_gpus": True}
                machine = Machine(id=mid, lease_id=lease_id, node_rank=0, host="127.0.0.1", port=20000 + i % 1000,
                                  user="fleet", key_path="/nonexistent/key", host_key="ssh-ed25519 AAAA",
                                  workdir=f"/nonexistent/{lease_id}", gpu_slots=slots, provider_ref=ref)
                store.save_lease(Lease(id=lease_id, provider=provider, template=template, machines=[machine],
                                       created_at=now, deadline=now + timedelta(hours=1),
                                       max_deadline=now + timedelta(hours=4), project=f"p{i % 7}",
                                       user=f"user{i % 4}", meta={"region": "us-east-1"} if machine_ids else {}))
                store.create_run(f"r-bench-{i:05d}", lease_id=lease_id, project=f"p{i % 7}", user=f"user{i % 4}",
                                 command="python train.py", log_path="/nonexistent", output_dir="/nonexistent")
    finally:
        store.close()


def moto_instances(leases: int, first: int = 0) -> list[str]:
    """`leases` running moto instances, instance k tagged fleet:lease = l-bench-{first + k}."""
    import boto3
    ec2 = boto3.client("ec2", region_name="us-east-1")
    image = ec2.describe_images(Owners=["amazon"], MaxResults=5)["Images"][0]["ImageId"]
    ids: list[str] = []
    while len(ids) < leases:
        batch = min(250, leases - len(ids))
        got = ec2.run_instances(ImageId=image, InstanceType="g5.xlarge", MinCount=batch, MaxCount=batch)
        ids += [i["InstanceId"] for i in got["Instances"]]

    def tag(k: int) -> None:
        ec2.create_tags(Resources=[ids[k]], Tags=[{"Key": "fleet:lease", "Value": f"l-bench-{first + k:05d}"},
                                                  {"Key": "fleet:managed", "Value": "true"}])
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(tag, range(leases)))
    return ids


def time_status(env: dict, args: list[str], expect: int, want_running: bool, timeout: float = 600) -> float:
    start = time.perf_counter()
    proc = subprocess.run([*fleet_argv(), *args], env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=env["FLEET_HOME"])
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"fleet {' '.join(args)} failed: {proc.stderr.strip()[-300:]}")
    if "--json" in args:
        leases = json.loads(proc.stdout)["leases"]
        if len(leases) != expect:
            raise RuntimeError(f"fleet status listed {len(leases)} leases, expected {expect}")
        if want_running:
            states = {m["state"] for v in leases for m in v["machines"]}
            if expect and states != {"running"}:
                raise RuntimeError(f"fleet status saw machine states {sorted(states)}, expected all running "
                                   "(the provider calls failed)")
    return elapsed


def compare(store: str, envs: dict[int, dict], leases: int, samples: int, counter=None,
            timeout: float = 600, variants: dict[str, list[str]] = VARIANTS) -> list[dict]:
    out = []
    for variant, args in variants.items():
        times: dict[int, list[float]] = {0: [], leases: []}
        for count in times:                              # warm: page cache, byte-code
            time_status(envs[count], args, count, counter is not None, timeout)
        for _ in range(samples):                         # interleaved, so drift hits both alike
            for count in times:
                times[count].append(time_status(envs[count], args, count, counter is not None, timeout))
        r = ratio_row(f"status {variant} {store}, {leases} / 0 leases", times[leases], times[0], TARGET)
        say(f"{store:10s} fleet {' '.join(args):38s} 0 leases {min(times[0]) * 1000:7.0f}.. ms   "
            f"{leases} leases {min(times[leases]) * 1000:7.0f}.. ms   ratio {r['value']}x "
            f"(target {TARGET}) {'met' if r['met'] else 'MISSED'}")
        out += [median_row(f"status {variant} {store}, 0 leases", times[0], "s"),
                median_row(f"status {variant} {store}, {leases} leases", times[leases], "s"), r]
    return out


def bench_store(store: str, leases: int, samples: int, tmp: Path) -> list[dict]:
    server = None
    try:
        if store == "postgresql":
            from tests.fixtures.postgres import create_database, start_server
            server = start_server()
            urls = {0: create_database(server, "empty"), leases: create_database(server, "full")}
        else:
            urls = {0: f"sqlite:///{tmp / 'empty.db'}", leases: f"sqlite:///{tmp / 'full.db'}"}
        envs = {}
        for count, url in urls.items():
            home = tmp / f"{store}-home-{count}"
            home.mkdir()
            envs[count] = clean_env(FLEET_HOME=str(home), FLEET_STATE_URL=url, FLEET_USER="user0")
            seed(url, count)
        return compare(store, envs, leases, samples)
    finally:
        if server is not None:
            from tests.fixtures.postgres import stop_server
            stop_server(server)


def bench_aws(leases: int, samples: int, tmp: Path, status_timeout_s: float) -> list[dict]:
    from _moto import aws_env, counting_moto
    with counting_moto() as (endpoint, counter):
        say(f"aws: making {leases} tagged moto instances ...")
        ids = moto_instances(leases)
        envs, counts = {}, {}
        for count in (0, SMALL, leases):
            home = tmp / f"aws-home-{count}"
            home.mkdir()
            url = f"sqlite:///{home / 'state.db'}"
            seed(url, count, ids[:count] or None)
            envs[count] = clean_env(FLEET_HOME=str(home), FLEET_STATE_URL=url, FLEET_USER="user0",
                                    **aws_env(endpoint))
        rows = []
        for count in (0, SMALL, leases):                 # EC2 calls of one `fleet status --json --refresh`
            counter.reset()
            try:
                took = time_status(envs[count], REFRESH["refresh json"], count, True, timeout=status_timeout_s)
            except subprocess.TimeoutExpired:
                # Bounded: a status that does not end is a missed target, with the calls seen so far.
                say(f"aws: fleet status with {count} leases did not finish within {status_timeout_s:g} s")
                seen = [row(f"EC2 calls per fleet status, {n} leases", c, "calls") for n, c in counts.items()]
                if SMALL in counts:
                    seen.append(row(f"EC2 calls per fleet status, {count} leases (at least; timed out)",
                                    counter.total("ec2"), "calls", f"== {counts[SMALL]}"))
                return rows + seen + [
                    failed_row(f"status json aws, {count} / 0 leases", "x",
                               f"fleet status with {count} AWS leases took over {status_timeout_s:g} s", TARGET)]
            counts[count] = counter.total("ec2")
            say(f"aws: fleet status --json --refresh with {count} leases: {counts[count]} EC2 calls, {took:.2f} s")
        counter.reset()                                  # the default, right after that refresh
        time_status(envs[leases], VARIANTS["json"], leases, True, timeout=status_timeout_s)
        remembered = counter.total("ec2")
        say(f"aws: fleet status --json with {leases} leases, after the refresh: {remembered} EC2 calls")
        rows += compare("aws", {0: envs[0], leases: envs[leases]}, leases, samples, counter, status_timeout_s)
        rows += compare("aws", {0: envs[0], leases: envs[leases]}, leases, samples, counter, status_timeout_s,
                        variants=REFRESH)
        rows += [row("EC2 calls per fleet status --refresh, 0 leases", counts[0], "calls"),
                 row(f"EC2 calls per fleet status --refresh, {SMALL} leases", counts[SMALL], "calls"),
                 row(f"EC2 calls per fleet status --refresh, {leases} leases", counts[leases], "calls",
                     f"== {counts[SMALL]}"),
                 row(f"EC2 calls per fleet status (within a minute of a refresh), {leases} leases", remembered,
                     "calls")]
        return rows


def main() -> int:
    parser = bench_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--leases", type=int, default=1000)
    parser.add_argument("--store", choices=["sqlite", "postgresql", "aws", "all"], default="all")
    parser.add_argument("--status-timeout", type=float, default=300,
                        help="seconds one `fleet status` on AWS may take before it counts as missed (default 300)")
    args = parser.parse_args()
    check_samples(parser, args)
    samples, leases = (1, 50) if args.quick else (args.samples, args.leases)
    stores = (["sqlite", "aws"] if args.quick else ["sqlite", "postgresql", "aws"]) if args.store == "all" \
        else [args.store]
    with json_stdout(args.json) as out:
        rows = [load_row()]
        for store in stores:
            with tempfile.TemporaryDirectory(prefix="fleet-bench-status-") as tmp:
                try:
                    rows += (bench_aws(leases, samples, Path(tmp), args.status_timeout) if store == "aws"
                             else bench_store(store, leases, samples, Path(tmp)))
                except Exception as exc:  # noqa: BLE001 — a store we could not measure is not a met target
                    say(f"{store}: not measured: {type(exc).__name__}: {exc}")
                    rows.append(failed_row(f"status {store}, {leases} / 0 leases", "x",
                                           f"{type(exc).__name__}: {exc}", TARGET))
        rows.append(load_row("at end"))
        emit(rows, as_json=args.json, out=out)
    return exit_code(rows)


if __name__ == "__main__":
    os.environ.pop("FLEET_STATE_URL", None)
    sys.exit(main())
