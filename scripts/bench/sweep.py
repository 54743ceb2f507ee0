#!/usr/bin/env python3
"""A sweep of 8 short trials on a warm pool of 2 machines versus 8 separate `fleet up` runs.

The experiment is a fresh git checkout with a [data] directory of random bytes (incompressible,
so staging has real work) and a trial that reads it and writes metrics.json. Each sample is, in a
FLEET_HOME of its own (both sides start cold; within a side, runs share that home as a user's do):
- warm pool: one `fleet sweep --param x=1..8 --parallel 2` process, measured whole;
- separate: 8 `fleet up` processes (one machine each), two at a time like the pool's two slots.
Sides alternate which goes first per round. Figures: medians of total time and of data bytes sent
(the "bytes of chunks sent" of every stage line), and their ratios; targets time ≤ 0.5×, bytes
≤ 0.3×. Missed targets are reported as missed.

Two pairs:
1. local machines (template local-1gpu). They are all on this host and share its chunk cache, so
   separate runs after the first two receive nothing: the bytes ratio cannot go below 0.5× here.
2. the AWS sandbox (scripts/aws_sandbox.py: moto + a loopback sshd per instance, template aws-1gpu),
   where each instance keeps a chunk cache of its own that goes with it, as an EC2 instance's disk
   does (fleet/snapshots/sync_remote.py): the pool brings the data onto each of its 2 instances, the
   separate runs onto each of their 8. One sandbox serves every sample; each side's FLEET_HOME is cold.

    python scripts/bench/sweep.py [-n 5] [--quick] [--json]

--quick: one sample, a smaller data set, and both pairs at 4 trials, not 8 (checks the bench, not
figures to quote).
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
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (bench_parser, check_samples, clean_env, failed_row, fleet_argv, median_row,  # noqa: E402
                     ratio_row, run_bench, say)

TRIALS = 8
QUICK_TRIALS = 4            # --quick: the smallest size that still has runs after the pool's 2
TARGETS = {"time": "<= 0.5", "bytes": "<= 0.3"}
SENT = re.compile(r"stage: pinned inputs on \d+ machine\(s\), (\d+) bytes of chunks sent")
GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "-c", "commit.gpgsign=false"]
TRIAL = ("import json,os,hashlib; d=os.environ['FLEET_OUTPUT_DIR']; os.makedirs(d, exist_ok=True); "
         "h=hashlib.sha256(open(os.environ['FLEET_DATA']+'/train/blob.bin','rb').read()).hexdigest(); "
         "json.dump({'x': float(os.environ.get('FLEET_PARAM_X', '0')), 'h': len(h)}, open(d+'/metrics.json','w'))")
LOCAL = 'template = "local-1gpu"\n'
AWS = 'provider = "aws"\ntemplate = "aws-1gpu"\n'


def experiment(exp: Path, data_mib: int, where: str) -> Path:
    (exp / "data").mkdir(parents=True)
    (exp / "data" / "blob.bin").write_bytes(os.urandom(data_mib * 1024 * 1024))
    (exp / "fleet.toml").write_text(f'project = "bench"\ncommand = "true"\n{where}'
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


def warm_pool(exp: Path, env: dict, trials: int) -> tuple[float, int]:
    start = time.perf_counter()
    err = _fleet(["sweep", "--param", "x=" + ",".join(str(i) for i in range(1, trials + 1)), "--parallel", "2",
                  "--", "python3", "-c", TRIAL], exp, env)
    return time.perf_counter() - start, sent_bytes(err)


def separate(exp: Path, env: dict, trials: int) -> tuple[float, int]:
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        errs = list(pool.map(lambda i: _fleet(["up", "--gpus", "1", "--", "python3", "-c", TRIAL], exp, env),
                             range(trials)))
    return time.perf_counter() - start, sum(sent_bytes(e) for e in errs)


def pair(samples: int, exp: Path, env_for: Callable[[Path], dict], trials: int, label: str) -> tuple[dict, dict]:
    """Both sides `samples` times, alternating which goes first; each run in a cold FLEET_HOME."""
    times: dict[str, list[float]] = {"pool": [], "up": []}
    sent: dict[str, list[float]] = {"pool": [], "up": []}
    order = [("pool", warm_pool), ("up", separate)]
    for i in range(samples):
        for name, side in order if i % 2 == 0 else reversed(order):
            seconds, nbytes = side(exp, env_for(exp.parent / f"home-{name}-{i}"), trials)
            times[name].append(seconds)
            sent[name].append(float(nbytes))
            say(f"{label} sample {i + 1}/{samples} {name}: {seconds:.1f}s, {nbytes} bytes sent")
    return times, sent


def rows(prefix: str, trials: int, times: dict, sent: dict) -> list[dict]:
    return [median_row(f"{prefix}sweep of {trials} on a warm pool: total", times["pool"], "s", digits=2),
            median_row(f"{prefix}{trials} separate fleet up (2 at a time): total", times["up"], "s", digits=2),
            ratio_row(f"{prefix}warm pool vs separate runs: total time", times["pool"], times["up"], TARGETS["time"]),
            median_row(f"{prefix}warm pool: data bytes sent", sent["pool"], "bytes", digits=0),
            median_row(f"{prefix}separate runs: data bytes sent", sent["up"], "bytes", digits=0),
            ratio_row(f"{prefix}warm pool vs separate runs: data bytes sent", sent["pool"], sent["up"],
                      TARGETS["bytes"])]


AWS_PREFIX = "AWS sandbox (a chunk cache per instance): "
AWS_FIGURES = [(f"{AWS_PREFIX}warm pool vs separate runs: total time", "x", TARGETS["time"]),
               (f"{AWS_PREFIX}warm pool vs separate runs: data bytes sent", "x", TARGETS["bytes"])]


def aws_rows(samples: int, root: Path, data_mib: int, trials: int) -> list[dict]:
    from fleet.providers.aws.sandbox import Sandbox
    from recovery import AWSSandbox       # the sandbox in the background, as the recovery bench runs it
    exp = experiment(root / "aws" / "exp", data_mib, AWS)
    box = AWSSandbox(root / "aws" / "sandbox-home")
    homes: list[Path] = []

    def env_for(home: Path) -> dict:
        homes.append(home)
        return {**box.env, "FLEET_HOME": str(home), "CI": "true"}
    try:
        times, sent = pair(samples, exp, env_for, trials, "aws")
        return rows(AWS_PREFIX, trials, times, sent)
    finally:
        for home in homes:     # machines a failed run left bound: each home keeps its own sandbox machines
            if (home / "aws-sandbox" / "machines").is_dir():
                sandbox = Sandbox(root=home / "aws-sandbox" / "machines")
                sandbox.unbind([b["instance_id"] for b in sandbox.bindings()])
        box.stop()


def measure(samples: int, quick: bool) -> list[dict]:
    data_mib, trials = (1, QUICK_TRIALS) if quick else (8, TRIALS)
    with tempfile.TemporaryDirectory(prefix="fleet-bench-sweep-") as tmp:
        exp = experiment(Path(tmp) / "local" / "exp", data_mib, LOCAL)
        found = rows("", trials, *pair(samples, exp, lambda home: clean_env(FLEET_HOME=str(home), CI="true"),
                                       trials, "local"))
        try:
            found += aws_rows(samples, Path(tmp), data_mib, trials)
        except (RuntimeError, OSError, ValueError, KeyError, ImportError, subprocess.SubprocessError) as exc:
            say(f"sweep: AWS sandbox pair not measured: {exc}")
            found += [failed_row(figure, unit, str(exc), target) for figure, unit, target in AWS_FIGURES]
    return found


def main() -> int:
    parser = bench_parser(__doc__.splitlines()[0])
    args = parser.parse_args()
    check_samples(parser, args)
    samples = 1 if args.quick else args.samples
    return run_bench("sweep", args, lambda: measure(samples, args.quick),
                     [("warm pool vs separate runs: total time", "x", TARGETS["time"]),
                      ("warm pool vs separate runs: data bytes sent", "x", TARGETS["bytes"]), *AWS_FIGURES])


if __name__ == "__main__":
    sys.exit(main())
