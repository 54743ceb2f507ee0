#!/usr/bin/env python3
"""The Slurm provider on a real test cluster (tests/fixtures/slurm.py: slurmctld, two slurmd, slurmdbd).

    sudo python scripts/bench/slurm.py [-n 5] [--quick] [--json]

1. `fleet up --gpus 2` (2 nodes × 1 GPU, `echo first-line`), time from the command's start to its
   first log line, against a bare `srun -N2 --gres=gpu:1` of the same command (to its first output
   line); whole processes, interleaved, the cluster idle before each sample. Median of n (5).
   Target: fleet ≤ 1.5× srun. Where fleet's time goes (informative, medians): from the start to
   each phase line fleet prints (lease: CLI start and code pin; ready: sbatch, queue, node steps;
   run: SSH, staging, environment capture; first line: the command itself).
2. fleet's own squeue + sacct calls per lease, counted by the command layer, for 1 and for 2
   nodes: lease (submit, poll until running, node addresses), describe, release. Target: the same
   count for 2 nodes as for 1 (constant in the number of nodes).

--quick: one sample per side (checks the bench works; not figures to quote). Needs root and
Debian's slurm packages; where the cluster cannot start, every figure is reported failed.
"""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (REPO, bench_parser, check_samples, clean_env, emit, exit_code, failed_row,  # noqa: E402
                     fleet_argv, json_stdout, load_row, median_row, ratio_row, row, say)

sys.path.insert(0, str(REPO))
COMMAND = "echo first-line"
PHASES = ("lease", "ready", "run")           # fleet's own phase lines, in the order they come
PHASE_LINE = re.compile(r"^fleet: (\w+): ")
FLEET_FIRST = re.compile(r"^\[\d+\] first-line")     # a rank's output line (not fleet's "run: echo first-line")
SRUN_FIRST = re.compile(r"^first-line")


def first_line(argv: list[str], env: dict, cwd: Path, marker: re.Pattern) -> tuple[float, dict[str, float]]:
    """Seconds from the start to the first line matching `marker` (stdout and stderr merged), and
    to the first line of each fleet phase."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    took, phases, tail = None, {}, []
    assert proc.stdout is not None
    for line in proc.stdout:
        now = time.perf_counter() - start
        match = PHASE_LINE.match(line)
        if match and match.group(1) in PHASES:
            phases.setdefault(match.group(1), now)
        if took is None and marker.search(line):
            took = now
        tail = (tail + [line.rstrip()])[-3:]
    proc.wait()
    if took is None or proc.returncode != 0:
        raise RuntimeError(f"{Path(argv[0]).name} exited {proc.returncode} before {marker.pattern!r}: "
                           f"{' | '.join(tail)}")
    return took, phases


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
    polls = leased.get("squeue", 0) + leased.get("sacct", 0)
    return {"lease": polls, "describe+release": total["squeue"] + total["sacct"] - polls}


def measure(samples: int, base: Path, cluster_env: dict) -> list[dict]:
    import os
    home, exp, nodes = base / "home", base / "exp", base / "nodes"
    for d in (home, exp, nodes):
        d.mkdir()
    (exp / "fleet.toml").write_text(
        f'project = "bench"\ncommand = "{COMMAND}"\nprovider = "slurm"\ntemplate = "slurm-1gpu"\n'
        f'max_duration = "10m"\n[slurm]\nworkdir = "{nodes}"\nprice_per_gpu_hour = 2\npoll = 0.5\n')
    env = clean_env(**cluster_env, FLEET_HOME=str(home))
    os.environ.update({**cluster_env, "FLEET_HOME": str(home)})
    fleet, bare, phases = [], [], {p: [] for p in PHASES}
    srun = ["srun", "-N2", "--ntasks-per-node=1", "--gres=gpu:1", "sh", "-c", COMMAND]
    for i in range(samples):
        drained(env)
        took, seen = first_line([*fleet_argv(), "up", "--gpus", "2", "-y"], env, exp, FLEET_FIRST)
        fleet.append(took)
        for p in PHASES:
            if p in seen:
                phases[p].append(seen[p])
        drained(env)
        bare.append(first_line(srun, env, exp, SRUN_FIRST)[0])
        say(f"sample {i + 1}/{samples}: fleet {fleet[-1]:.2f}s, srun {bare[-1]:.3f}s, phases "
            + ", ".join(f"{p} {seen[p]:.2f}s" for p in PHASES if p in seen))
    rows = [
        median_row("fleet up --gpus 2: start to first log line", fleet, "s"),
        median_row("bare srun -N2 --gres=gpu:1: start to first output line", bare, "s"),
        ratio_row("fleet / srun, start to first log line", fleet, bare, "<= 1.5"),
    ]
    rows += [median_row(f"fleet up: start to its '{p}:' line", phases[p], "s") for p in PHASES]
    drained(env)
    one = calls_per_lease(1, str(nodes))
    drained(env)
    two = calls_per_lease(2, str(nodes))
    rows += [
        row("squeue+sacct calls to describe and release a 1-node lease", one["describe+release"], "calls"),
        row("squeue+sacct calls to describe and release a 2-node lease", two["describe+release"], "calls",
            f"== {one['describe+release']}"),
        # While leasing, every squeue is one poll of the queue until the job runs: their number
        # follows how long the cluster takes to start it (the load), one per poll whatever the nodes.
        row("squeue calls to lease 1 node (one per queue poll until running)", one["lease"], "calls"),
        row("squeue calls to lease 2 nodes (one per queue poll until running)", two["lease"], "calls"),
    ]
    return rows


def main() -> int:
    parser = bench_parser(__doc__.split("\n\n")[0])
    args = parser.parse_args()
    check_samples(parser, args)
    samples = 1 if args.quick else args.samples
    with json_stdout(args.json) as out:
        rows = [load_row()]
        from tests.fixtures.slurm import ClusterUnavailable, start_cluster, stop_cluster
        try:
            cluster = start_cluster()
        except ClusterUnavailable as exc:
            rows += [failed_row("fleet / srun, start to first log line", "x", f"no test cluster: {exc}", "<= 1.5")]
            emit(rows, as_json=args.json, out=out)
            return exit_code(rows)
        base = Path(tempfile.mkdtemp(prefix="fleet-bench-slurm-"))
        try:
            rows += measure(samples, base, cluster.env)
        except Exception as exc:  # noqa: BLE001 — a failed measurement is a failed figure, not a traceback
            rows.append(failed_row("fleet / srun, start to first log line", "x", str(exc), "<= 1.5"))
        finally:
            stop_cluster(cluster)
            subprocess.run(["rm", "-rf", str(base)], check=False)
        rows.append(load_row("at end"))
        emit(rows, as_json=args.json, out=out)
    return exit_code(rows)


if __name__ == "__main__":
    sys.exit(main())
