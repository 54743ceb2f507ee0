#!/usr/bin/env python3
"""Budget benchmarks, each ours against a reference in one run.

1. release: seconds from a run's budget being crossed to all of its 8 local machines released
   (real sshd machines, a real `fleet up`); the reference is the same machines released by
   `fleet down` (the floor any stop can reach). Target: ≤ tick + grace + 5 s.
2. report: `fleet report --format json` (the CLI, a fresh process) over 100,000 ledger rows versus
   the same over 1,000 rows; runs interleaved, medians compared. Target ≤ 3×.

    python scripts/bench/budget.py [--part report|release|all] [-n 5] [--json]

A missed target is reported as missed; a part that fails is reported as failed, never as met.
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
REPORT_TARGET = 3.0


def fleet_argv() -> list[str]:
    beside = Path(sys.executable).parent / "fleet"
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "fleet.cli.main"]


def seeded_home(root: Path, rows: int) -> Path:
    from fleet.state.db import Database
    from tests.fixtures.ledger import seed
    home = root / f"home-{rows}"
    home.mkdir()
    db = Database(home / "state.db")
    seed(db, rows)
    db.close()
    return home


def time_report(home: Path) -> float:
    env = {**os.environ, "FLEET_HOME": str(home)}
    start = time.perf_counter()
    proc = subprocess.run([*fleet_argv(), "report", "--format", "json"], env=env, capture_output=True, timeout=300)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"fleet report failed: {proc.stderr.decode(errors='replace')[-300:]}")
    return elapsed


def bench_report(runs: int) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="fleet-bench-report-") as tmp:
        small, large = seeded_home(Path(tmp), 1_000), seeded_home(Path(tmp), 100_000)
        time_report(small), time_report(large)          # warm caches once
        t_small, t_large = [], []
        for _ in range(runs):
            t_small.append(time_report(small))
            t_large.append(time_report(large))
    m_small, m_large = statistics.median(t_small), statistics.median(t_large)
    ratio = m_large / m_small
    print(f"fleet report, 1,000 rows:   median {m_small:.3f} s over {runs} runs")
    print(f"fleet report, 100,000 rows: median {m_large:.3f} s over {runs} runs")
    print(f"ratio 100k / 1k: {ratio:.2f}x (target <= {REPORT_TARGET}x) {'met' if ratio <= REPORT_TARGET else 'MISSED'}")
    return [
        {"figure": "report_1k_rows_s", "value": round(m_small, 4), "unit": "s", "target": None, "met": None},
        {"figure": "report_100k_rows_s", "value": round(m_large, 4), "unit": "s", "target": None, "met": None},
        {"figure": "report_100k_vs_1k_ratio", "value": round(ratio, 3), "unit": "x", "target": REPORT_TARGET,
         "met": ratio <= REPORT_TARGET},
    ]


def bench_release(runs: int) -> list[dict]:
    from budget_release import bench_release as run   # noqa: PLC0415 - sits beside this file
    return run(runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("report", "release", "all"), default="all")
    parser.add_argument("-n", type=int, default=5, help="timed runs per side")
    parser.add_argument("--json", action="store_true", help="print the figures as a JSON list")
    args = parser.parse_args()
    figures: list[dict] = []
    parts = ["release", "report"] if args.part == "all" else [args.part]
    for part in parts:
        try:
            figures += bench_report(args.n) if part == "report" else bench_release(max(1, args.n // 2))
        except Exception as exc:  # noqa: BLE001 — a failed part is a missed figure, not a crash
            print(f"{part}: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
            figures.append({"figure": f"{part}_failed", "value": None, "unit": "", "target": None, "met": False})
    if args.json:
        print(json.dumps(figures, indent=2))
    return 0 if all(f["met"] is not False for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
