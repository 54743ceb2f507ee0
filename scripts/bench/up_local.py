#!/usr/bin/env python3
"""Time from `fleet up` to the first log line: 8 one-GPU local machines versus 1, in one run.

Each size runs R times (interleaved); the figure is the median time until the first rank-prefixed
line of the experiment reaches our stdout, as a ratio 8 vs 1. Target ≤ 2×.

    python scripts/bench/up_local.py [-r 3] [--json]
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

TARGET = 2.0


def first_line_s(fleet: str, gpus: int, cwd: Path, env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.Popen([fleet, "up", "--gpus", str(gpus), "--template", "local-1gpu", "--",
                             "sh", "-c", "echo first-line"], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    seen = None
    for line in proc.stdout:
        if seen is None and "] first-line" in line:
            seen = time.perf_counter() - start
    proc.wait()
    if proc.returncode != 0 or seen is None:
        raise SystemExit(f"up_local: fleet up --gpus {gpus} failed (exit {proc.returncode})")
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-r", "--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    fleet = str(Path(sys.executable).parent / "fleet")
    with tempfile.TemporaryDirectory() as tmp:
        exp = Path(tmp) / "exp"
        exp.mkdir()
        (exp / "fleet.toml").write_text('project = "bench"\ncommand = "true"\n')
        env = {**os.environ, "FLEET_HOME": str(Path(tmp) / "home"), "CI": "true"}
        times: dict[int, list[float]] = {1: [], 8: []}
        for _ in range(args.repeat):
            for n in (1, 8):
                times[n].append(first_line_s(fleet, n, exp, env))
    one, eight = statistics.median(times[1]), statistics.median(times[8])
    ratio = eight / one
    figures = [
        {"figure": "up to first log line, 1 machine (median)", "value": round(one, 3), "unit": "s",
         "target": None, "met": None},
        {"figure": "up to first log line, 8 machines (median)", "value": round(eight, 3), "unit": "s",
         "target": None, "met": None},
        {"figure": "8 machines / 1 machine", "value": round(ratio, 2), "unit": "x", "target": f"<= {TARGET}",
         "met": ratio <= TARGET},
    ]
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for f in figures:
            target = f" target {f['target']}: {'met' if f['met'] else 'MISSED'}" if f["target"] else ""
            print(f"{f['figure']:<45} {f['value']:>8} {f['unit']}{target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
