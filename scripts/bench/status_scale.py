#!/usr/bin/env python3
"""`fleet status` with 1,000 live leases in the state versus 0, on SQLite and on PostgreSQL.

Each figure is the median wall time of the CLI as a user runs it (a fresh process: imports, state
open, queries, provider checks, rendering), with 0 leases (the reference) and with 1,000 active
leases of one machine each (plus one run each, as `fleet up` leaves them), measured interleaved in
one run. Target: 1,000 leases ≤ 2× the empty state. The PostgreSQL server is a private one started
in a temporary directory (as the tests do) and removed afterwards.

Provider checks: the seeded leases are local-provider leases whose machines no longer exist, so
`describe` answers from the filesystem (no SSH) — what is measured is fleet's own cost per lease.

    python scripts/bench/status_scale.py [-n 5] [--leases 1000] [--store sqlite|postgresql|all] [--json]

A missed target is reported as missed; a store that cannot be measured is reported as not met.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
TARGET = 2.0
VARIANTS = {"table": ["status", "--all-users"], "json": ["status", "--all-users", "--json"]}


def fleet_argv() -> list[str]:
    beside = Path(sys.executable).parent / "fleet"
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "fleet.cli.main"]


def seed(url: str, leases: int) -> None:
    """`leases` active leases (1 machine, 2 GPU slots, 1 run each) from 4 users, as fleet writes them."""
    from fleet.models import Lease, Machine, utcnow
    from fleet.state import open_state
    store = open_state(url)
    now = utcnow()
    try:
        with store.db.transaction():
            for i in range(leases):
                lease_id = f"l-bench-{i:05d}"
                machine = Machine(id=f"{lease_id}-n0", lease_id=lease_id, node_rank=0, host="127.0.0.1",
                                  port=20000 + i % 1000, user="fleet", key_path="/nonexistent/key",
                                  host_key="ssh-ed25519 AAAA", workdir=f"/nonexistent/{lease_id}",
                                  gpu_slots=(0, 1), provider_ref={"dir": f"/nonexistent/{lease_id}", "sshd_pid": 0,
                                                                  "simulated_gpus": True})
                store.save_lease(Lease(id=lease_id, provider="local", template="local-4gpu", machines=[machine],
                                       created_at=now, deadline=now + timedelta(hours=1),
                                       max_deadline=now + timedelta(hours=4), project=f"p{i % 7}",
                                       user=f"user{i % 4}"))
                store.create_run(f"r-bench-{i:05d}", lease_id=lease_id, project=f"p{i % 7}", user=f"user{i % 4}",
                                 command="python train.py", log_path="/nonexistent", output_dir="/nonexistent")
    finally:
        store.close()


def time_status(env: dict, args: list[str], expect: int) -> float:
    start = time.perf_counter()
    proc = subprocess.run([*fleet_argv(), *args], env=env, capture_output=True, text=True, timeout=300,
                          cwd=env["FLEET_HOME"])
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"fleet {' '.join(args)} failed: {proc.stderr.strip()[-300:]}")
    if "--json" in args:
        seen = len(json.loads(proc.stdout)["leases"])
        if seen != expect:
            raise RuntimeError(f"fleet status listed {seen} leases, expected {expect}")
    return elapsed


def bench_store(store: str, leases: int, runs: int, tmp: Path) -> list[dict]:
    server = None
    envs = {}
    try:
        if store == "postgresql":
            from tests.fixtures.postgres import create_database, start_server
            server = start_server()
            urls = {0: create_database(server, "empty"), leases: create_database(server, "full")}
        else:
            urls = {0: f"sqlite:///{tmp / 'empty.db'}", leases: f"sqlite:///{tmp / 'full.db'}"}
        for count, url in urls.items():
            home = tmp / f"{store}-home-{count}"
            home.mkdir()
            envs[count] = {**os.environ, "FLEET_HOME": str(home), "FLEET_STATE_URL": url, "FLEET_USER": "user0"}
            seed(url, count)
        out = []
        for variant, args in VARIANTS.items():
            samples: dict[int, list[float]] = {0: [], leases: []}
            for count in samples:                        # warm: first open migrates nothing, caches files
                time_status(envs[count], args, count)
            for _ in range(runs):                        # interleaved, so drift hits both alike
                for count in samples:
                    samples[count].append(time_status(envs[count], args, count))
            empty, full = statistics.median(samples[0]), statistics.median(samples[leases])
            ratio = full / empty
            print(f"{store:10s} fleet {' '.join(args):28s} 0 leases {empty * 1000:7.0f} ms   "
                  f"{leases} leases {full * 1000:7.0f} ms   ratio {ratio:4.2f}× (target ≤ {TARGET}×) "
                  f"{'met' if ratio <= TARGET else 'MISSED'}", file=sys.stderr)
            out += [
                {"figure": f"status_{variant}_{store}_0_leases_s", "value": round(empty, 4), "unit": "s",
                 "target": None, "met": None},
                {"figure": f"status_{variant}_{store}_{leases}_leases_s", "value": round(full, 4), "unit": "s",
                 "target": None, "met": None},
                {"figure": f"status_{variant}_{store}_{leases}_vs_0_ratio", "value": round(ratio, 3), "unit": "x",
                 "target": f"<= {TARGET}", "met": ratio <= TARGET},
            ]
        return out
    finally:
        if server is not None:
            from tests.fixtures.postgres import stop_server
            stop_server(server)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--runs", type=int, default=5)
    parser.add_argument("--leases", type=int, default=1000)
    parser.add_argument("--store", choices=["sqlite", "postgresql", "all"], default="all")
    parser.add_argument("--json", action="store_true", help="print the figures as a JSON list on stdout")
    args = parser.parse_args()
    figures = []
    stores = ["sqlite", "postgresql"] if args.store == "all" else [args.store]
    for store in stores:
        with tempfile.TemporaryDirectory(prefix="fleet-bench-status-") as tmp:
            try:
                figures += bench_store(store, args.leases, args.runs, Path(tmp))
            except Exception as exc:  # noqa: BLE001 — a store we could not measure is not a met target
                print(f"{store}: not measured: {exc}", file=sys.stderr)
                figures.append({"figure": f"status_{store}_{args.leases}_vs_0_ratio", "value": None, "unit": "x",
                                "target": f"<= {TARGET}", "met": False, "error": str(exc)[:300]})
    if args.json:
        print(json.dumps(figures, indent=2))
    return 0 if all(f["met"] is not False for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
