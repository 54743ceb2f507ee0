#!/usr/bin/env python3
"""A sweep of 8 short trials on a warm pool of 2 local machines versus 8 separate `fleet up` runs.

The experiment is a fresh git checkout with a [data] directory of random bytes (incompressible,
so staging has real work) and a trial that reads it and writes metrics.json. Each sample is, in a
FLEET_HOME of its own (both sides start cold; within a side, runs share that home as a user's do):
- warm pool: one `fleet sweep --param x=1..8 --parallel 2` process, measured whole;
- separate: 8 `fleet up` processes (one machine each), two at a time like the pool's two slots.
Sides alternate which goes first per round. Figures: medians of total time and of data bytes sent
(the "bytes of chunks sent" of every stage line), and their ratios; targets time ≤ 0.5×, bytes
≤ 0.3×. Missed targets are reported as missed.

    python scripts/bench/sweep.py [-n 5] [--quick] [--json]

--quick: one sample and a smaller data set (checks the bench, not figures to quote).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (bench_parser, check_samples, clean_env, fleet_argv, median_row, ratio_row,  # noqa: E402
                     run_bench, say)

TRIALS = 8
TARGETS = {"time": "<= 0.5", "bytes": "<= 0.3"}
SENT = re.compile(r"stage: pinned inputs on \d+ machine\(s\), (\d+) bytes of chunks sent")
GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "-c", "commit.gpgsign=false"]
TRIAL = ("import json,os,hashlib; d=os.environ['FLEET_OUTPUT_DIR']; os.makedirs(d, exist_ok=True); "
         "h=hashlib.sha256(open(os.environ['FLEET_DATA']+'/train/blob.bin','rb').read()).hexdigest(); "
         "json.dump({'x': float(os.environ.get('FLEET_PARAM_X', '0')), 'h': len(h)}, open(d+'/metrics.json','w'))")


def experiment(root: Path, data_mib: int) -> Path:
    exp = root / "exp"
    (exp / "data").mkdir(parents=True)
    (exp / "data" / "blob.bin").write_bytes(os.urandom(data_mib * 1024 * 1024))
    (exp / "fleet.toml").write_text('project = "bench"\ncommand = "true"\ntemplate = "local-1gpu"\n'
                                    'max_duration = "10m"\n[data]\ntrain = "data"\n')
    (exp / ".gitignore").write_text("runs/\ndata/\n")
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "bench"]):
        subprocess.run([*GIT, *argv], cwd=exp, check=True, capture_output=True)
    return exp


def _fleet(args: list[str], exp: Path, env: dict) -> str:
    with tempfile.TemporaryFile("w+") as errors:       # a file, not a pipe: stderr can never block fleet
        proc = subprocess.run([*fleet_argv(), *args], cwd=exp, env=env, stdout=subprocess.DEVNULL,
                              stderr=errors, text=True, timeout=600)
        errors.seek(0)
        err = errors.read()
    if proc.returncode != 0:
        raise RuntimeError(f"fleet {args[0]} exited {proc.returncode}: {(err.strip().splitlines() or ['?'])[-1][:200]}")
    return err


def sent_bytes(stderr: str) -> int:
    return sum(int(m.group(1)) for m in SENT.finditer(stderr))


def warm_pool(exp: Path, home: Path) -> tuple[float, int]:
    env = clean_env(FLEET_HOME=str(home), CI="true")
    start = time.perf_counter()
    err = _fleet(["sweep", "--param", "x=" + ",".join(str(i) for i in range(1, TRIALS + 1)), "--parallel", "2",
                  "--", "python3", "-c", TRIAL], exp, env)
    return time.perf_counter() - start, sent_bytes(err)


def separate(exp: Path, home: Path) -> tuple[float, int]:
    env = clean_env(FLEET_HOME=str(home), CI="true")
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        errs = list(pool.map(lambda i: _fleet(["up", "--gpus", "1", "--", "python3", "-c", TRIAL], exp, env),
                             range(TRIALS)))
    return time.perf_counter() - start, sum(sent_bytes(e) for e in errs)


def measure(samples: int, quick: bool) -> list[dict]:
    times: dict[str, list[float]] = {"pool": [], "up": []}
    sent: dict[str, list[float]] = {"pool": [], "up": []}
    with tempfile.TemporaryDirectory(prefix="fleet-bench-sweep-") as tmp:
        exp = experiment(Path(tmp), 1 if quick else 8)
        for i in range(samples):
            order = [("pool", warm_pool), ("up", separate)]
            for name, side in order if i % 2 == 0 else reversed(order):
                seconds, nbytes = side(exp, Path(tmp) / f"home-{name}-{i}")
                times[name].append(seconds)
                sent[name].append(float(nbytes))
                say(f"sample {i + 1}/{samples} {name}: {seconds:.1f}s, {nbytes} bytes sent")
    return [median_row("sweep of 8 on a warm pool: total", times["pool"], "s", digits=2),
            median_row("8 separate fleet up (2 at a time): total", times["up"], "s", digits=2),
            ratio_row("warm pool vs separate runs: total time", times["pool"], times["up"], TARGETS["time"]),
            median_row("warm pool: data bytes sent", sent["pool"], "bytes", digits=0),
            median_row("separate runs: data bytes sent", sent["up"], "bytes", digits=0),
            ratio_row("warm pool vs separate runs: data bytes sent", sent["pool"], sent["up"], TARGETS["bytes"])]


def main() -> int:
    parser = bench_parser(__doc__.splitlines()[0])
    args = parser.parse_args()
    check_samples(parser, args)
    samples = 1 if args.quick else args.samples
    return run_bench("sweep", args, lambda: measure(samples, args.quick),
                     [("warm pool vs separate runs: total time", "x", TARGETS["time"]),
                      ("warm pool vs separate runs: data bytes sent", "x", TARGETS["bytes"])])


if __name__ == "__main__":
    sys.exit(main())
