#!/usr/bin/env python3
"""Budget benchmarks, each ours against a reference in one run.

1. release: seconds from a run's budget being crossed to all of its 8 local machines released
   (real sshd machines, a real `fleet up` whose experiment exits on SIGTERM); the reference is the
   same 8 machines released by the provider alone (the floor any stop can reach). Target: one
   tick + the stop margin (the reserve kept beyond the grace period), or the budget is overspent.
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
        # The first report over a bulk-seeded ledger seals every row (verifies its digest once);
        # in use, rows are sealed as runs end, so the steady state below is what managers see.
        first_small, first_large = time_report(small), time_report(large)
        print(f"first report (sealing every row): 1,000 rows {first_small:.3f} s, 100,000 rows {first_large:.3f} s")
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
        {"figure": "report_first_100k_rows_sealing_s", "value": round(first_large, 4), "unit": "s", "target": None,
         "met": None},
        {"figure": "report_1k_rows_s", "value": round(m_small, 4), "unit": "s", "target": None, "met": None},
        {"figure": "report_100k_rows_s", "value": round(m_large, 4), "unit": "s", "target": None, "met": None},
        {"figure": "report_100k_vs_1k_ratio", "value": round(ratio, 3), "unit": "x", "target": REPORT_TARGET,
         "met": ratio <= REPORT_TARGET},
    ]


PROMPT_EXIT = "trap 'exit 143' TERM; echo started; while true; do sleep 0.1; done"
MACHINES = 8


def _fleet_up_budget_stop(root: Path) -> tuple[float, float]:
    """One budget-stopped run on 8 local machines. Returns (crossing → released s, crossing → no
    process left s): the first from the ledger, the second watched from outside."""
    from decimal import Decimal

    from fleet.run.budget import STOP_MARGIN_S
    from fleet.ledger import Ledger, parse_iso
    from fleet.state.db import Database
    from tests.conftest import processes_under
    exp = root / "exp"
    exp.mkdir()
    price, budget, grace = Decimal(36), Decimal("2.80"), 2     # 8 × $0.01/s: $2.80 lasts 35 s
    (exp / "fleet.toml").write_text(
        f'project = "bench"\ntemplate = "local-1gpu"\nmax_duration = "10m"\nbudget = {budget}\n'
        f'command = {json.dumps(PROMPT_EXIT)}\n[budgets]\ngrace = "{grace}s"\n[prices]\n"local-1gpu" = {price}\n')
    home = root / "home"
    env = {**os.environ, "FLEET_HOME": str(home)}
    proc = subprocess.Popen([*fleet_argv(), "up", "--gpus", str(MACHINES), "--json"], cwd=exp, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    gone_at = None
    seen_up = False
    while proc.poll() is None or gone_at is None:
        alive = bool(processes_under(home))
        seen_up |= alive
        if gone_at is None and seen_up and not alive:
            gone_at = time.time()
        if proc.poll() is not None and gone_at is None and not alive:
            gone_at = time.time()
        time.sleep(0.05)
    summary = json.loads(proc.stdout.read() or b"{}")
    if proc.returncode != 11 or summary.get("status") != "budget-stopped":
        raise RuntimeError(f"expected budget-stopped exit 11, got {proc.returncode}: {summary.get('message')}")
    db = Database(home / "state.db")
    rows = Ledger(db).read(lease_id=summary["lease_id"]).entries
    db.close()
    burn = price / 3600 * MACHINES
    opened = min(parse_iso(r.start_at) for r in rows)
    crossing = opened.timestamp() + float((budget - burn * (grace + Decimal(STOP_MARGIN_S))) / burn)
    closed = max(parse_iso(r.end_at) for r in rows if r.kind == "close").timestamp()
    return closed - crossing, gone_at - crossing


def _release_only(root: Path) -> float:
    """Reference: the same 8 machines released directly by the provider (the floor)."""
    os.environ["FLEET_HOME"] = str(root / "home-ref")
    from fleet.ids import new_lease_id
    from fleet.plan import make_plan
    from fleet.providers.local import LocalProvider
    provider = LocalProvider()
    plan = make_plan(provider="local", template=provider.template("local-1gpu"), gpus=MACHINES,
                     max_duration_s=600, heartbeat_ttl_s=120, project="bench", user="bench")
    lease = provider.lease(plan, new_lease_id(), 120)
    start = time.perf_counter()
    provider.release(lease)
    return time.perf_counter() - start


def bench_release(runs: int) -> list[dict]:
    from fleet.run.budget import STOP_MARGIN_S
    target = 1.0 + STOP_MARGIN_S       # one tick + the margin the stop keeps beyond the grace period
    ours, outside, ref = [], [], []
    for i in range(runs):
        with tempfile.TemporaryDirectory(prefix="fleet-bench-release-") as tmp:
            a, b = _fleet_up_budget_stop(Path(tmp))
            ours.append(a)
            outside.append(b)
            ref.append(_release_only(Path(tmp)))
    m_ours, m_out, m_ref = statistics.median(ours), statistics.median(outside), statistics.median(ref)
    print(f"budget crossed -> {MACHINES} machines released (ledger): median {m_ours:.2f} s over {runs} run(s) "
          f"(target <= {target:.1f} s) {'met' if m_ours <= target else 'MISSED'}")
    print(f"budget crossed -> no machine process left (watched): median {m_out:.2f} s")
    print(f"reference: provider.release of {MACHINES} machines alone: median {m_ref:.2f} s; "
          f"ratio {m_ours / m_ref:.1f}x")
    return [
        {"figure": "budget_cross_to_released_s", "value": round(m_ours, 3), "unit": "s", "target": target,
         "met": m_ours <= target},
        {"figure": "budget_cross_to_processes_gone_s", "value": round(m_out, 3), "unit": "s", "target": None,
         "met": None},
        {"figure": "release_only_8_machines_s", "value": round(m_ref, 3), "unit": "s", "target": None, "met": None},
    ]


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
