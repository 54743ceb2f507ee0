#!/usr/bin/env python3
"""`fleet down --all` of 16 local machines (two kept leases of 8), and `fleet down LEASE` of 8.

Each sample first makes the machines with whole `fleet up --gpus 8 --keep 10m -- true` processes
(not timed), then times one whole `fleet down` process from its start to its exit (exit 0
required) and checks that no machine directory is left. Figures: medians with their spread;
targets: 16 machines ≤ 3 s (`--all`), one lease of 8 machines ≤ 2 s.

    python scripts/bench/down.py [-n 5] [--quick] [--json]

--quick: one sample, one kept lease of 2 machines per side (checks the bench, not figures to quote).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (bench_parser, check_samples, clean_env, fleet_argv, median_row, run_bench, say)  # noqa: E402

TARGETS = {"all": "<= 3", "one": "<= 2"}


def kept_lease(exp: Path, env: dict, gpus: int) -> str:
    proc = subprocess.run([*fleet_argv(), "up", "--gpus", str(gpus), "--keep", "10m", "--json", "--", "true"],
                          cwd=exp, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"fleet up --keep exited {proc.returncode}: {proc.stderr.strip()[-200:]}")
    return json.loads(proc.stdout)["lease_id"]


def timed_down(exp: Path, env: dict, args: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run([*fleet_argv(), "down", *args], cwd=exp, env=env, capture_output=True, text=True,
                          timeout=300)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"fleet down {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()[-200:]}")
    return took


def leftovers(home: Path) -> list[str]:
    machines = home / "machines"
    return sorted(p.name for p in machines.iterdir()) if machines.is_dir() else []


def measure(samples: int, quick: bool) -> list[dict]:
    gpus = 2 if quick else 8
    per_all, per_one = [], []
    with tempfile.TemporaryDirectory(prefix="fleet-bench-down-") as tmp:
        exp = Path(tmp) / "exp"
        exp.mkdir()
        (exp / "fleet.toml").write_text('project = "bench"\ncommand = "true"\ntemplate = "local-1gpu"\n'
                                        'max_duration = "20m"\n')
        home = Path(tmp) / "home"
        env = clean_env(FLEET_HOME=str(home), CI="true")
        for rnd in range(samples):
            kept_lease(exp, env, gpus)
            kept_lease(exp, env, gpus)
            per_all.append(timed_down(exp, env, ["--all"]))
            if leftovers(home):
                raise RuntimeError(f"fleet down --all left machines: {leftovers(home)}")
            lease = kept_lease(exp, env, gpus)
            per_one.append(timed_down(exp, env, [lease]))
            if leftovers(home):
                raise RuntimeError(f"fleet down {lease} left machines: {leftovers(home)}")
            say(f"round {rnd + 1}/{samples}: down --all of {2 * gpus} machines {per_all[-1]:.2f} s, "
                f"down of one lease of {gpus} {per_one[-1]:.2f} s")
    return [median_row(f"fleet down --all, {2 * gpus} local machines (2 leases)", per_all, "s", TARGETS["all"]),
            median_row(f"fleet down LEASE, {gpus} local machines", per_one, "s", TARGETS["one"])]


def main() -> int:
    parser = bench_parser(__doc__.splitlines()[0])
    args = parser.parse_args()
    check_samples(parser, args)
    return run_bench("down", args, lambda: measure(1 if args.quick else args.samples, args.quick),
                     [("fleet down --all, 16 local machines (2 leases)", "s", TARGETS["all"]),
                      ("fleet down LEASE, 8 local machines", "s", TARGETS["one"])])


if __name__ == "__main__":
    sys.exit(main())
