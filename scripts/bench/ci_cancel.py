#!/usr/bin/env python3
"""Seconds from SIGTERM (a cancelled CI job) to every machine released, for `fleet up` in a
simulated GitHub Actions job on local machines, beside a reference in the same run: the same
cancellation outside CI mode (fleet.run.execute's default 10 s graceful stop).

    python scripts/bench/ci_cancel.py [--runs 3] [--gpus 2] [--json]

Two experiments: one that exits on SIGTERM (the usual case) and one that ignores it (the worst
case: fleet waits out the whole grace, then kills it). "Released" means no process started under
the run's FLEET_HOME is left (every sshd machine and watchdog gone). Target: the worst case in CI
mode ≤ 7.5 s, GitHub's window between SIGINT and SIGTERM (SIGKILL follows soon after).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.conftest import processes_under  # noqa: E402  (the same check the tests use)

FLEET = str(Path(sys.executable).parent / "fleet")
TARGET_S = 7.5
COMMANDS = {"exits-on-term": "echo started; sleep 300",
            "ignores-term": "trap '' TERM; echo started; while :; do sleep 0.2; done"}


class NeverStarted(Exception):
    """The run failed before the experiment started: nothing to cancel, so no figure."""


def one_run(tmp: Path, command: str, *, ci: bool, gpus: int) -> tuple[float, float, int]:
    """(seconds to all machines gone, seconds to exit, exit code) after one SIGTERM."""
    home, exp = tmp / "home", tmp / "exp"
    home.mkdir()
    exp.mkdir()
    (exp / "fleet.toml").write_text('project = "bench"\ntemplate = "local-1gpu"\nmax_duration = "10m"\n'
                                    f"command = {json.dumps(command)}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "GITHUB_ACTIONS", "FLEET_GRACE")}
    env.update(FLEET_HOME=str(home), FLEET_USER="bench")
    if ci:
        env.update(CI="true", GITHUB_ACTIONS="true", GITHUB_SHA="0" * 40, GITHUB_REPOSITORY="bench/bench",
                   GITHUB_RUN_ID="1", GITHUB_STEP_SUMMARY=str(tmp / "summary.md"), GITHUB_OUTPUT=str(tmp / "out"))
    proc = subprocess.Popen([FLEET, "up", "--gpus", str(gpus)] + (["--ci"] if ci else []), cwd=exp, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    started = threading.Event()
    tail: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            tail.append(line)
            if "started" in line:
                started.set()
    threading.Thread(target=read, daemon=True).start()
    try:
        if not started.wait(180):
            raise NeverStarted("".join(tail)[-1500:])
        time.sleep(0.5)   # every rank is running
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        released = None
        while time.monotonic() - t0 < 60:
            if released is None and not processes_under(home):
                released = time.monotonic() - t0
            if released is not None and proc.poll() is not None:
                break
            time.sleep(0.05)
        proc.wait(timeout=60)
        exited = time.monotonic() - t0
        return (released if released is not None else float("inf")), exited, proc.returncode
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        subprocess.run([FLEET, "down", "--all"], cwd=exp, env={**os.environ, "FLEET_HOME": str(home)},
                       capture_output=True, timeout=60)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--gpus", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    figures = []
    medians: dict[tuple[str, bool], float] = {}
    for name, command in COMMANDS.items():
        for ci in (True, False):
            released, exited, codes = [], [], []
            for _ in range(args.runs):
                for attempt in range(3):
                    try:
                        with tempfile.TemporaryDirectory(prefix="fleet-bench-ci-") as tmp:
                            r, e, code = one_run(Path(tmp), command, ci=ci, gpus=args.gpus)
                        break
                    except NeverStarted as exc:   # said out loud, then retried: it is not the figure
                        print(f"run did not start (attempt {attempt + 1}), retrying: {str(exc)[-300:]}",
                              file=sys.stderr)
                else:
                    raise SystemExit("the experiment never started in 3 attempts")
                released.append(r)
                exited.append(e)
                codes.append(code)
            med = statistics.median(released)
            medians[(name, ci)] = med
            mode = "ci" if ci else "reference (not CI mode)"
            if not args.json:
                print(f"{name:14s} {mode:24s} SIGTERM→released median {med:5.2f}s "
                      f"(runs {', '.join(f'{x:.2f}' for x in released)}), exit median "
                      f"{statistics.median(exited):5.2f}s, exit codes {sorted(set(codes))}")
            if ci:
                figures.append({"figure": f"sigterm_to_released_s[{name}]", "value": round(med, 3), "unit": "s",
                                "target": TARGET_S, "met": med <= TARGET_S})
                figures.append({"figure": f"exit_codes[{name}]", "value": sorted(set(codes)), "unit": "code",
                                "target": [130], "met": sorted(set(codes)) == [130]})
            else:
                figures.append({"figure": f"reference_sigterm_to_released_s[{name}]", "value": round(med, 3),
                                "unit": "s", "target": None, "met": None})
        ratio = medians[(name, True)] / medians[(name, False)] if medians[(name, False)] else None
        figures.append({"figure": f"ci_vs_reference_ratio[{name}]",
                        "value": None if ratio is None else round(ratio, 3), "unit": "x", "target": None,
                        "met": None})
        if not args.json and ratio is not None:
            print(f"{name:14s} CI mode / reference = {ratio:.2f}x")
    if args.json:
        print(json.dumps(figures, indent=2))
    return 0 if all(f["met"] is not False for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
