#!/usr/bin/env python3
"""CLI start-up cost: `fleet --help` and `fleet status` versus bare `python -c pass`, in one run.

Each command runs N times (interleaved, so a busy machine slows all three alike); the figure is the
median wall time of ours divided by the median of the reference. Targets: help ≤ 4×, status ≤ 5×.
FLEET_HOME is a fresh temporary directory, so `status` sees an empty state database.

    python scripts/bench/cli_startup.py [-n 15] [--json]

A command that fails (e.g. `fleet status` not written yet) is reported as failed, never as met.
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

TARGETS = {"help": 4.0, "status": 5.0}


def fleet_executable() -> str:
    """The `fleet` entry point next to this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "fleet"
    if beside.exists():
        return str(beside)
    found = shutil.which("fleet")
    if not found:
        sys.exit("cli_startup: no `fleet` entry point found (install the package: pip install -e .)")
    return found


def time_once(argv: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    elapsed = time.perf_counter() - start
    err_lines = proc.stderr.decode(errors="replace").strip().splitlines()
    return elapsed, proc.returncode, err_lines[-1] if err_lines else ""


def measure(runs: int) -> dict[str, dict]:
    fleet = fleet_executable()
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as home:
        env = {**os.environ, "FLEET_HOME": home}
        env.pop("FLEET_DEBUG", None)
        commands = {
            "python": [sys.executable, "-c", "pass"],
            "help": [fleet, "--help"],
            "status": [fleet, "status"],
        }
        for argv in commands.values():          # warm the page cache and byte-code caches once
            try:
                time_once(argv, env)
            except subprocess.TimeoutExpired:
                pass
        samples: dict[str, list[float]] = {name: [] for name in commands}
        failure: dict[str, str] = {}
        for _ in range(runs):
            for name, argv in commands.items():
                if name in failure:
                    continue
                try:
                    elapsed, code, last_err = time_once(argv, env)
                except subprocess.TimeoutExpired:
                    failure[name] = "timed out after 120 s"
                    continue
                if code != 0:
                    failure[name] = f"exit {code}: {last_err}"[:200]
                    continue
                samples[name].append(elapsed)
    return {name: {"median_s": statistics.median(s) if s and name not in failure else None,
                   "failure": failure.get(name)} for name, s in samples.items()}


def figures(results: dict[str, dict]) -> list[dict]:
    base = results["python"]["median_s"]
    out = [{"figure": "python -c pass (reference), median", "value": round(base * 1000, 1) if base else None,
            "unit": "ms", "target": None, "met": None}]
    for name, target in TARGETS.items():
        ours = results[name]["median_s"]
        label = f"fleet {'--help' if name == 'help' else name}"
        out.append({"figure": f"{label}, median", "value": round(ours * 1000, 1) if ours else None,
                    "unit": "ms", "target": None, "met": None})
        ratio = round(ours / base, 2) if ours and base else None
        entry = {"figure": f"{label} / python -c pass", "value": ratio, "unit": "x", "target": f"<= {target}",
                 "met": bool(ratio is not None and ratio <= target)}
        if results[name]["failure"]:
            entry["error"] = results[name]["failure"]
        out.append(entry)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=15, help="runs of each command (default 15)")
    parser.add_argument("--json", action="store_true", help="print a JSON list of figures")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    rows = figures(measure(args.runs))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        value = "FAILED" if row["value"] is None else f"{row['value']} {row['unit']}"
        verdict = "" if row["target"] is None else f"  target {row['target']}: {'met' if row['met'] else 'MISSED'}"
        error = f"  ({row['error']})" if row.get("error") else ""
        print(f"{row['figure']:<36} {value:>12}{verdict}{error}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
