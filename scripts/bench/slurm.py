#!/usr/bin/env python3
"""The Slurm provider on a real test cluster (tests/fixtures/slurm.py: slurmctld, two slurmd, slurmdbd).

    sudo python scripts/bench/slurm.py [--json]

1. `fleet up --gpus 2` (2 nodes × 1 GPU), time from the command's start to its first log line on
   the terminal, against a bare `srun -N2 --gres=gpu:1` of the same command (time to its first
   output line). 5 samples each, median. Target: fleet ≤ 1.5× srun.
2. fleet's own squeue + sacct calls per lease, counted by the command layer, for 1 and for 2
   nodes: lease (submit, poll until running, node addresses), describe, release. Target: the same
   count for 2 nodes as for 1 (constant in the number of nodes).
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
FLEET = str(Path(sys.executable).parent / "fleet")
SAMPLES = 5
COMMAND = "echo first-line"


def first_line_s(argv: list[str], env: dict, cwd: Path, marker: str) -> float:
    start = time.monotonic()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    took = None
    for line in proc.stdout:
        if took is None and marker in line:
            took = time.monotonic() - start
    proc.wait()
    if took is None or proc.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed (exit {proc.returncode}) or printed no {marker!r}")
    return took


def drained(env: dict, timeout: float = 120) -> None:
    """Wait until no job holds or waits for nodes, so every sample starts from an idle cluster
    (a job still COMPLETING from the previous sample would make the next one queue)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        out = subprocess.run(["squeue", "-h", "-t", "PD,R,CG,CF", "-o", "%i"], capture_output=True, text=True,
                             env=env).stdout
        if not out.strip():
            return
        time.sleep(0.2)


def calls_per_lease(nodes: int, workdir: str) -> dict[str, int]:
    from fleet.ids import new_lease_id
    from fleet.plan import make_plan
    from fleet.providers.base import choose_mix
    from fleet.providers.slurm.provider import SlurmProvider
    from fleet.providers.slurm.settings import SlurmSettings
    provider = SlurmProvider(SlurmSettings(workdir=workdir, poll_s=0.5))
    plan = make_plan(provider="slurm", mix=choose_mix(provider, "slurm-1gpu", nodes), max_duration_s=600,
                     heartbeat_ttl_s=120, project="bench", user="bench")
    lease = provider.lease(plan, new_lease_id(), 120)
    leased = dict(provider.slurm.calls)
    provider.describe(lease)
    provider.release(lease)
    total = provider.slurm.calls
    return {"lease": leased.get("squeue", 0) + leased.get("sacct", 0),
            "describe+release": total["squeue"] + total["sacct"] - leased.get("squeue", 0) - leased.get("sacct", 0),
            "srun": total["srun"], "sinfo": total["sinfo"], "sbatch": total["sbatch"]}


def figure(name: str, value, unit: str, target: str, met: bool) -> dict:
    return {"figure": name, "value": value, "unit": unit, "target": target, "met": bool(met)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true", help="print only the JSON list of figures")
    args = parser.parse_args()
    from tests.fixtures.slurm import start_cluster, stop_cluster
    cluster = start_cluster()
    base = Path(tempfile.mkdtemp(prefix="fleet-bench-slurm-"))
    try:
        home, exp, nodes = base / "home", base / "exp", base / "nodes"
        for d in (home, exp, nodes):
            d.mkdir()
        (exp / "fleet.toml").write_text(
            f'project = "bench"\ncommand = "{COMMAND}"\nprovider = "slurm"\ntemplate = "slurm-1gpu"\n'
            f'max_duration = "10m"\n[slurm]\nworkdir = "{nodes}"\nprice_per_gpu_hour = 2\npoll = 0.5\n')
        env = {**os.environ, **cluster.env, "FLEET_HOME": str(home)}
        os.environ.update({**cluster.env, "FLEET_HOME": str(home)})
        fleet, bare = [], []
        for _ in range(SAMPLES):
            drained(env)
            fleet.append(first_line_s([FLEET, "up", "--gpus", "2"], env, exp, "first-line"))
            drained(env)
            bare.append(first_line_s(["srun", "-N2", "--ntasks-per-node=1", "--gres=gpu:1", "sh", "-c", COMMAND],
                                     env, exp, "first-line"))
        f_med, s_med = statistics.median(fleet), statistics.median(bare)
        drained(env)
        one = calls_per_lease(1, str(nodes))
        drained(env)
        two = calls_per_lease(2, str(nodes))
        figures = [
            figure("fleet up --gpus 2: start to first log line (median of 5)", round(f_med, 3), "s", "", True),
            figure("bare srun -N2 --gres=gpu:1: start to first output line (median of 5)", round(s_med, 3), "s", "",
                   True),
            figure("fleet / srun, start to first log line", round(f_med / s_med, 2), "ratio", "<= 1.5",
                   f_med / s_med <= 1.5),
            figure("squeue+sacct calls to describe and release a 1-node lease", one["describe+release"], "calls",
                   "", True),
            figure("squeue+sacct calls to describe and release a 2-node lease", two["describe+release"], "calls",
                   "== 1-node", two["describe+release"] == one["describe+release"]),
            figure("squeue+sacct calls to lease 1 node (polls until running)", one["lease"], "calls", "", True),
            figure("squeue+sacct calls to lease 2 nodes (polls until running)", two["lease"], "calls",
                   "<= 1-node + 1 (polling is per time, not per node)", two["lease"] <= one["lease"] + 1),
        ]
        if args.json:
            print(json.dumps(figures))
        else:
            print(f"fleet samples {[round(x, 2) for x in fleet]}, srun samples {[round(x, 2) for x in bare]}")
            print(f"calls 1 node {one}, 2 nodes {two}")
            for f in figures:
                print(f"{'ok ' if f['met'] else 'MISS'} {f['figure']}: {f['value']} {f['unit']} {f['target']}")
        return 0
    finally:
        stop_cluster(cluster)
        subprocess.run(["rm", "-rf", str(base)], check=False)


if __name__ == "__main__":
    sys.exit(main())
