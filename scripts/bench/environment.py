#!/usr/bin/env python3
"""Environment capture and the environment cache, on the local provider (real sshd machines).

One experiment, a git checkout with one commit, whose command prints a line from a package its
setup installs from a local wheel directory (`pip install -U --no-index --find-links W tinypkg`).
Each sample is one whole `fleet up` process in one FLEET_HOME, after one unmeasured warming run
(it fills the host's environment cache and keeps the package set's wheels in the store; its
figures are reported too, informative). Measured:
- capture: the stage's own time, as the run record keeps it (`environment.capture_s`: the probe on
  the machine plus the store lookup of the package set's wheels); target ≤ 0.5 s;
- time to ready: from the process start to the experiment's first rank-prefixed line, for the run
  with setup on a warm host versus the same experiment with no setup at all (interleaved, order
  alternating); target ≤ 1.2×; and whether the warm setup installed anything (it must not) or was
  skipped altogether (the setup cache: an install-only setup from unchanged files, fleet/setup_cache.py);
- the same for `fleet rerun` of the warming run on the warm host (pinned package set; informative).

    python scripts/bench/environment.py [-n 5] [--quick] [--json]

--quick: one sample per side (checks the bench, not figures to quote).
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (bench_parser, check_samples, clean_env, fleet_argv, median_row, ratio_row, row,  # noqa: E402
                     run_bench, say)

TARGETS = {"capture": "<= 0.5", "ready": "<= 1.2"}
RANK_LINE = re.compile(r"^\[\d+\] ")
GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "-c", "commit.gpgsign=false"]


def write_wheel(directory: Path, name: str, version: str) -> None:
    dist = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": f"VERSION = {version!r}\n".encode(),
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    with zipfile.ZipFile(directory / f"{name}-{version}-py3-none-any.whl", "w") as z:
        record = ""
        for path, data in files.items():
            z.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record += f"{path},sha256={digest},{len(data)}\n"
        z.writestr(f"{dist}/RECORD", record + f"{dist}/RECORD,,\n")


def experiment(root: Path, name: str, setup: str | None) -> Path:
    exp = root / name
    exp.mkdir()
    line = "import tinypkg; print(tinypkg.VERSION)" if setup else "print(1)"
    lines = ['project = "bench"', f"command = \"python -c '{line}'\"",
             'template = "local-1gpu"', 'max_duration = "10m"']
    if setup:
        lines.append(f'setup = "{setup}"')
    (exp / "fleet.toml").write_text("\n".join(lines) + "\n")
    (exp / ".gitignore").write_text("runs/\n")
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", name]):
        subprocess.run([*GIT, *argv], cwd=exp, check=True, capture_output=True)
    return exp


def measure(samples: int) -> list[dict]:
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="fleet-bench-env-") as tmp:
        root = Path(tmp)
        wheels = root / "wheels"
        wheels.mkdir()
        write_wheel(wheels, "tinypkg", "1.0")
        with_setup = experiment(root, "with-setup", f"pip install -U --no-index --find-links {wheels} tinypkg")
        bare = experiment(root, "no-setup", None)
        env = clean_env(FLEET_HOME=str(root / "home"), CI="true")
        cold, run_id, _ = first_line(with_setup, env)
        rows.append(median_row("cold run with setup: time to first line (fills the caches)", [cold], "s"))
        rows.append(median_row("cold run: capture incl. packing wheels into the store",
                               [capture_s(with_setup, env, run_id)], "s"))
        ready_setup, ready_bare, ready_rerun, captures, installed, skipped = [], [], [], [], 0, 0
        recorded = run_id
        for rnd in range(samples):
            for side in (("setup", "bare", "rerun") if rnd % 2 == 0 else ("rerun", "bare", "setup")):
                if side == "setup":
                    t, run_id, err = first_line(with_setup, env)
                    ready_setup.append(t)
                    captures.append(capture_s(with_setup, env, run_id))
                    installed += "Installing collected packages" in err
                    skipped += "setup: skipped" in err
                elif side == "rerun":
                    t, _, _ = first_line(with_setup, env, ["rerun", recorded])
                    ready_rerun.append(t)
                else:
                    t, _, _ = first_line(bare, env)
                    ready_bare.append(t)
                say(f"round {rnd + 1}/{samples} {side}: first line {t:.2f} s")
    rows.append(median_row("environment capture (warm package set)", captures, "s", TARGETS["capture"]))
    rows.append(median_row("time to first line, warm host with setup", ready_setup, "s"))
    rows.append(median_row("time to first line, no setup", ready_bare, "s"))
    rows.append(ratio_row("time to ready, warm setup / no setup", ready_setup, ready_bare, TARGETS["ready"]))
    rows.append(median_row("time to first line, pinned rerun on the warm host", ready_rerun, "s"))
    rows.append(ratio_row("time to ready, pinned rerun / no setup", ready_rerun, ready_bare))
    rows.append(row("warm leases that installed a package", installed, "runs", "== 0"))
    rows.append(row(f"warm leases whose setup was skipped (setup cache), of {len(ready_setup)}", skipped, "runs"))
    return rows


def first_line(exp: Path, env: dict, command: list[str] | None = None) -> tuple[float, str, str]:
    """(seconds from the process start to the first rank line on stderr, run id, stderr) of one
    `fleet up` (or `command`, e.g. a rerun)."""
    start = time.perf_counter()
    proc = subprocess.Popen([*fleet_argv(), *(command or ["up"]), "--json"], cwd=exp, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = None
    lines: list[str] = []
    assert proc.stderr is not None
    for line in proc.stderr:       # --json: the experiment's lines come on stderr, prefixed by rank
        lines.append(line)
        if first is None and RANK_LINE.match(line):
            first = time.perf_counter() - start
    out = proc.stdout.read() if proc.stdout else ""
    proc.wait()
    if proc.returncode != 0 or first is None:
        last = ("".join(lines).strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"fleet up in {exp.name} exited {proc.returncode}: {last.strip()[:200]}")
    return first, json.loads(out)["run_id"], "".join(lines)


def capture_s(exp: Path, env: dict, run_id: str) -> float:
    shown = subprocess.run([*fleet_argv(), "runs", "show", run_id, "--json"], cwd=exp, env=env,
                           capture_output=True, text=True, check=True)
    return float(json.loads(shown.stdout)["environment"]["capture_s"])


def main() -> int:
    parser = bench_parser(__doc__.splitlines()[0])
    args = parser.parse_args()
    check_samples(parser, args)
    return run_bench("environment", args, lambda: measure(1 if args.quick else args.samples),
                     [("environment capture (warm package set)", "s", TARGETS["capture"]),
                      ("time to ready, warm setup / no setup", "x", TARGETS["ready"])])


if __name__ == "__main__":
    sys.exit(main())
