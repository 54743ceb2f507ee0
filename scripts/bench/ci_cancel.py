#!/usr/bin/env python3
"""Seconds from SIGTERM (a cancelled CI job) to every machine released, for `fleet up` in a
simulated GitHub Actions job on local machines, beside a reference in the same run: the same
cancellation outside CI mode (fleet.run.execute's default 10 s graceful stop).

    python scripts/bench/ci_cancel.py [-n 5] [--gpus 2] [--quick] [--json]

Two experiments: one that exits on SIGTERM (the usual case) and one that ignores it (the worst
case: fleet waits out the whole grace, then kills it). "Released" means no process started under
the run's FLEET_HOME is left (every sshd machine and watchdog gone). Target: the worst case in CI
mode ≤ 7.5 s, GitHub's window between SIGINT and SIGTERM (SIGKILL follows soon after).

--quick: one sample of each on one GPU (checks the bench, not figures to quote).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.conftest import processes_under  # noqa: E402  (the same check the tests use)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (bench_parser, check_samples, emit, exit_code, json_stdout, load_row,  # noqa: E402
                     median_row, ratio_row, row, say)

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


def measure(name: str, command: str, *, ci: bool, samples: int, gpus: int) -> tuple[list[float], list[int]]:
    released, codes = [], []
    for _ in range(samples):
        for attempt in range(3):
            try:
                with tempfile.TemporaryDirectory(prefix="fleet-bench-ci-") as tmp:
                    r, _exited, code = one_run(Path(tmp), command, ci=ci, gpus=gpus)
                break
            except NeverStarted as exc:   # said out loud, then retried: it is not the figure
                say(f"{name}: run did not start (attempt {attempt + 1}), retrying: {str(exc)[-300:]}")
        else:
            raise SystemExit("the experiment never started in 3 attempts")
        released.append(r)
        codes.append(code)
        say(f"{name} {'CI' if ci else 'reference'}: released {r:.2f}s after SIGTERM, exit {code}")
    return released, codes


def main() -> int:
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=2)
    args = parser.parse_args()
    check_samples(parser, args)
    samples, gpus = (1, 1) if args.quick else (args.samples, args.gpus)
    with json_stdout(args.json) as out:
        rows = [load_row()]
        for name, command in COMMANDS.items():
            ci_released, ci_codes = measure(name, command, ci=True, samples=samples, gpus=gpus)
            ref_released, _ = measure(name, command, ci=False, samples=samples, gpus=gpus)
            rows.append(median_row(f"CI mode, experiment {name}: SIGTERM to every machine released", ci_released,
                                   "s", f"<= {TARGET_S}", digits=2))
            rows.append(row(f"CI mode, experiment {name}: runs not exiting 130", sum(c != 130 for c in ci_codes),
                            "runs", "== 0"))
            rows.append(median_row(f"reference (not CI mode), experiment {name}: SIGTERM to released",
                                   ref_released, "s", digits=2))
            rows.append(ratio_row(f"experiment {name}: CI mode vs reference", ci_released, ref_released))
        rows.append(load_row("at end"))
        emit(rows, as_json=args.json, out=out)
    return exit_code(rows)


if __name__ == "__main__":
    sys.exit(main())
