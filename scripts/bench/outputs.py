#!/usr/bin/env python3
"""Controller memory while collecting 2 GiB of outputs from one local machine, and the throughput.

Each sample is one `fleet up --gpus 1` whose command makes 2 GiB of outputs on the machine with
fallocate (8 × 256 MiB, no time spent writing them there), so what is measured is fleet bringing
them home: tar on the machine, SSH, the controller unpacking to disk. Figures are medians of
5 samples:
- the controller's peak RSS over the whole run (os.wait4 on the `fleet up` process: an upper bound
  of its memory while collecting). Target ≤ 250 MB; before streaming, 400 MB of outputs took 849 MB.
- collect throughput: 2 GiB over the time from the `collect` phase line to the `release` one
  (informative).

    python scripts/bench/outputs.py [-n 5] [--json]

With --json only the JSON list of figures goes to stdout; progress goes to stderr.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_MB = 250
PARTS, PART_MIB = 8, 256
TOTAL_MIB = PARTS * PART_MIB
MAKE_OUTPUTS = (f'set -e; o=$FLEET_OUTPUT_DIR; mkdir -p "$o"; i=0; while [ $i -lt {PARTS} ]; do '
                f'fallocate -l {PART_MIB}M "$o/part-$i" 2>/dev/null || truncate -s {PART_MIB}M "$o/part-$i"; '
                f'i=$((i+1)); done')


def one_sample(fleet: str, exp: Path, env: dict) -> tuple[float, float]:
    """(peak RSS in MB, collect seconds) of one `fleet up` bringing 2 GiB home."""
    proc = subprocess.Popen([fleet, "up", "--gpus", "1", "--template", "local-1gpu", "--json", "--",
                             "sh", "-c", MAKE_OUTPUTS], cwd=exp, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    collect_at = release_at = None
    for line in proc.stderr:
        if line.startswith("fleet: collect:"):
            collect_at = time.perf_counter()
        elif line.startswith("fleet: release:"):
            release_at = time.perf_counter()
    out = proc.stdout.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 or collect_at is None or release_at is None:
        raise SystemExit(f"outputs bench: fleet up failed (exit {proc.returncode}): {out[-500:]}")
    summary = json.loads(out)
    node = Path(summary["run_dir"]) / "node-0"
    got = sum(p.stat().st_size for p in node.glob("part-*"))
    if got != TOTAL_MIB << 20:
        raise SystemExit(f"outputs bench: {got} bytes came home, expected {TOTAL_MIB << 20}")
    shutil.rmtree(summary["run_dir"], ignore_errors=True)   # 2 GiB per sample: keep the disk free
    return usage.ru_maxrss / 1024, release_at - collect_at


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--samples", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print only a JSON list of figures on stdout")
    args = parser.parse_args()
    fleet = str(Path(sys.executable).parent / "fleet")
    rss, secs = [], []
    with tempfile.TemporaryDirectory(prefix="fleet-bench-outputs-") as tmp:
        exp = Path(tmp) / "exp"
        exp.mkdir()
        (exp / "fleet.toml").write_text('project = "bench"\ncommand = "true"\n')
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "GITHUB_"))}
        env.update(FLEET_HOME=str(Path(tmp) / "home"), CI="true")
        try:
            for i in range(args.samples):
                peak, took = one_sample(fleet, exp, env)
                rss.append(peak)
                secs.append(took)
                print(f"sample {i + 1}/{args.samples}: peak RSS {peak:.0f} MB, collect {took:.2f} s "
                      f"({TOTAL_MIB / took:.0f} MiB/s)", file=sys.stderr)
        finally:
            subprocess.run([fleet, "down", "--all"], cwd=exp, env=env, capture_output=True)
    peak = statistics.median(rss)
    took = statistics.median(secs)
    figures = [
        {"figure": f"controller peak RSS collecting {TOTAL_MIB // 1024} GiB of outputs (median of {len(rss)})",
         "value": round(peak, 1), "unit": "MB", "target": f"<= {TARGET_MB}", "met": peak <= TARGET_MB},
        {"figure": "controller peak RSS, worst sample", "value": round(max(rss), 1), "unit": "MB",
         "target": None, "met": None},
        {"figure": f"collect throughput, {TOTAL_MIB // 1024} GiB from one local machine (median)",
         "value": round(TOTAL_MIB / took, 1), "unit": "MiB/s", "target": None, "met": None},
    ]
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for f in figures:
            target = f"  target {f['target']}: {'met' if f['met'] else 'MISSED'}" if f["target"] else ""
            print(f"{f['figure']:<62} {f['value']:>8} {f['unit']}{target}", file=sys.stderr)
    return 0 if all(f["met"] is not False for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
