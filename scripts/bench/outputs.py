#!/usr/bin/env python3
"""Outputs home: throughput of 2 machines × 100 MB against an rsync pull, and controller memory.

Throughput (target: fleet ≥ 0.8× rsync's throughput). Each sample is one whole `fleet up --gpus 2
--keep 5m` on one-GPU local machines whose command writes 100 MiB of random bytes (incompressible,
so no compression can flatter either side) into each machine's $FLEET_OUTPUT_DIR. fleet's figure:
200 MiB over the time from its `collect` phase line to the next phase line (`keep`). The reference,
right after on the same kept machine: `rsync -a` pulling node 0's 100 MiB over OpenSSH (the lease's
own key and pinned host key, `fleet ssh`'s command line) into a fresh directory, one whole process.
Then `fleet down`. The ratio is median(fleet MiB/s) / median(rsync MiB/s), spread per pair.

Memory (target ≤ 250 MB): one `fleet up --gpus 1` whose command makes 2 GiB of outputs with
fallocate (8 × 256 MiB); the controller's peak RSS over the whole run (os.wait4 on the process).

    python scripts/bench/outputs.py [-n 5] [--quick] [--json]

--quick: 1 sample, 2 × 20 MiB and 256 MiB for memory (checks the bench, not figures to quote).
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (REPO, bench_parser, check_samples, clean_env, emit, exit_code, failed_row,  # noqa: E402
                     fleet_argv, json_stdout, load_row, median_row, ratio_row, say)

TARGET_RSS_MB = "<= 250"
TARGET_RATIO = ">= 0.8"


def _phases(proc: subprocess.Popen) -> dict[str, float]:
    """Time each `fleet: <phase>:` line came on stderr."""
    seen: dict[str, float] = {}
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("fleet: "):
            phase = line[len("fleet: "):].split(":", 1)[0]
            seen.setdefault(phase, time.perf_counter())
    return seen


def fleet_collect(exp: Path, env: dict, mib: int) -> tuple[float, dict]:
    """(seconds from collect to keep, summary) of one `fleet up --gpus 2 --keep` with `mib` per machine."""
    make = f'mkdir -p "$FLEET_OUTPUT_DIR" && head -c {mib}M /dev/urandom > "$FLEET_OUTPUT_DIR/blob"'
    proc = subprocess.Popen([*fleet_argv(), "up", "--gpus", "2", "--template", "local-1gpu", "--keep", "5m",
                             "--json", "--", "sh", "-c", make], cwd=exp, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    phases = _phases(proc)
    out = proc.stdout.read() if proc.stdout else ""
    proc.wait()
    if proc.returncode != 0 or "collect" not in phases or "keep" not in phases:
        raise RuntimeError(f"fleet up exited {proc.returncode} (phases {sorted(phases)}): {out[-300:]}")
    summary = json.loads(out)
    for node in (0, 1):
        got = (Path(summary["run_dir"]) / f"node-{node}" / "blob").stat().st_size
        if got != mib << 20:
            raise RuntimeError(f"node {node}: {got} bytes came home, expected {mib << 20}")
    return phases["keep"] - phases["collect"], summary


def rsync_pull(summary: dict, env: dict, dest: Path) -> float:
    """Seconds for one `rsync -a` of node 0's outputs of the run over the lease's ssh."""
    code = ("import json, sys\nfrom fleet.leases import ssh_argv\nfrom fleet.state import open_state\n"
            "lease = open_state().get_lease(sys.argv[1])\nm = next(x for x in lease.machines if x.node_rank == 0)\n"
            "print(json.dumps({'argv': ssh_argv(lease.id, 0, ['true'])[:-2], 'dest': ssh_argv(lease.id, 0, ['true'])[-2],"
            " 'dir': m.workdir + '/outputs/' + sys.argv[2] + '/'}))")
    info = json.loads(subprocess.run([sys.executable, "-c", code, summary["lease_id"], summary["run_id"]], env=env,
                                     cwd=REPO, capture_output=True, text=True, check=True).stdout)
    start = time.perf_counter()
    subprocess.run(["rsync", "-a", "-e", shlex.join(info["argv"]), f"{info['dest']}:{info['dir']}", str(dest)],
                   check=True, capture_output=True, env=env)
    took = time.perf_counter() - start
    return took


def measure_throughput(samples: int, mib: int, tmp: Path) -> list[dict]:
    exp = tmp / "exp"
    exp.mkdir()
    (exp / "fleet.toml").write_text('project = "bench"\ncommand = "true"\n')
    env = clean_env(FLEET_HOME=str(tmp / "home"), CI="true")
    ours, ref = [], []
    try:
        for i in range(samples):
            took, summary = fleet_collect(exp, env, mib)
            dest = tmp / f"rsync-{i}"
            pulled = rsync_pull(summary, env, dest)
            if (dest / "blob").stat().st_size != mib << 20:
                raise RuntimeError("rsync did not bring the whole blob")
            subprocess.run([*fleet_argv(), "down", summary["lease_id"]], cwd=exp, env=env, capture_output=True,
                           check=True)
            shutil.rmtree(summary["run_dir"], ignore_errors=True)
            shutil.rmtree(dest, ignore_errors=True)
            ours.append(2 * mib / took)
            ref.append(mib / pulled)
            say(f"sample {i + 1}/{samples}: fleet 2 × {mib} MiB in {took:.2f} s ({ours[-1]:.0f} MiB/s), "
                f"rsync {mib} MiB in {pulled:.2f} s ({ref[-1]:.0f} MiB/s)")
    finally:
        subprocess.run([*fleet_argv(), "down", "--all"], cwd=exp, env=env, capture_output=True)
    return [median_row(f"fleet collect throughput, 2 machines × {mib} MiB", ours, "MiB/s", digits=1),
            median_row(f"rsync pull throughput, 1 machine × {mib} MiB", ref, "MiB/s", digits=1),
            ratio_row("fleet collect / rsync pull throughput", ours, ref, TARGET_RATIO)]


def rss_sample(exp: Path, env: dict, parts: int, part_mib: int) -> float:
    make = (f'set -e; o=$FLEET_OUTPUT_DIR; mkdir -p "$o"; i=0; while [ $i -lt {parts} ]; do '
            f'fallocate -l {part_mib}M "$o/part-$i" 2>/dev/null || truncate -s {part_mib}M "$o/part-$i"; '
            f'i=$((i+1)); done')
    proc = subprocess.Popen([*fleet_argv(), "up", "--gpus", "1", "--template", "local-1gpu", "--json", "--",
                             "sh", "-c", make], cwd=exp, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _pid, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"fleet up exited {code}: {out[-300:]}")
    summary = json.loads(out)
    got = sum(p.stat().st_size for p in (Path(summary["run_dir"]) / "node-0").glob("part-*"))
    if got != (parts * part_mib) << 20:
        raise RuntimeError(f"{got} bytes came home, expected {(parts * part_mib) << 20}")
    shutil.rmtree(summary["run_dir"], ignore_errors=True)   # GiBs per sample: keep the disk free
    return usage.ru_maxrss / 1024


def measure_rss(samples: int, parts: int, part_mib: int, tmp: Path) -> list[dict]:
    exp = tmp / "exp-rss"
    exp.mkdir()
    (exp / "fleet.toml").write_text('project = "bench"\ncommand = "true"\n')
    env = clean_env(FLEET_HOME=str(tmp / "home-rss"), CI="true")
    peaks = []
    try:
        for i in range(samples):
            peaks.append(rss_sample(exp, env, parts, part_mib))
            say(f"sample {i + 1}/{samples}: peak RSS {peaks[-1]:.0f} MB collecting {parts * part_mib} MiB")
    finally:
        subprocess.run([*fleet_argv(), "down", "--all"], cwd=exp, env=env, capture_output=True)
    return [median_row(f"controller peak RSS collecting {parts * part_mib} MiB of outputs", peaks, "MB",
                       TARGET_RSS_MB, digits=1)]


def main() -> int:
    parser = bench_parser(__doc__.splitlines()[0])
    args = parser.parse_args()
    check_samples(parser, args)
    samples = 1 if args.quick else args.samples
    mib, parts = (20, 1) if args.quick else (100, 8)
    with json_stdout(args.json) as out:
        rows = [load_row()]
        with tempfile.TemporaryDirectory(prefix="fleet-bench-outputs-") as tmp:
            try:
                rows += measure_throughput(samples, mib, Path(tmp))
            except (RuntimeError, subprocess.SubprocessError, OSError, ValueError, KeyError) as exc:
                say(f"outputs: throughput not measured: {exc}")
                rows.append(failed_row("fleet collect / rsync pull throughput", "x", str(exc), TARGET_RATIO))
            try:
                rows += measure_rss(samples, parts, 256, Path(tmp))
            except (RuntimeError, subprocess.SubprocessError, OSError, ValueError, KeyError) as exc:
                say(f"outputs: memory not measured: {exc}")
                rows.append(failed_row("controller peak RSS collecting outputs", "MB", str(exc), TARGET_RSS_MB))
        rows.append(load_row("at end"))
        emit(rows, as_json=args.json, out=out)
    return exit_code(rows)


if __name__ == "__main__":
    sys.exit(main())
