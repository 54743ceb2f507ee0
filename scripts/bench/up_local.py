#!/usr/bin/env python3
"""`fleet up` on the real quickstart example, 8 local machines versus 1: first log line and total.

The experiment is examples/digits as shipped (its fleet.toml, its `setup` line, the data its
digits_data.py makes, train.py), copied into a temporary directory that is a git checkout with
one commit — as a user runs it, so code pinning and staging do their real work. Each sample is
one whole `fleet up --gpus N` process (N = 1 and 8, one-GPU local machines, interleaved with the
order alternating per round) in one FLEET_HOME, after one unmeasured warming run of each size
(the cold figures are reported too, informative). Measured from the process start:
- first log line: the first rank-prefixed line of the experiment (`[k] ...`) on fleet's stdout;
- total: until `fleet up` exits (machines released, outputs home), exit 0 required.
Figures: medians with their spread; targets 8 vs 1 ≤ 2× (first line) and ≤ 1.5× (total).
Informative: fleet's own phases, start → its `setup:` line on stderr (lease, SSH ready, staging;
the experiment's setup line and its own start-up come after it), 8 vs 1; and the experiment alone,
with no fleet at all, in the same rounds: its `setup` in N processes at once, then, once all have
finished (as fleet runs them: no rank starts before every setup succeeded), its `command` in N
processes at once, with the rank variables fleet sets, from the same interpreter the local machines
use. On a host whose cores all machines share, that is the floor: a control plane that cost nothing
would measure exactly the experiment's own ratio, and any fixed cost it has moves the ratio towards
1, not away (docs/control-plane-speed.md).

    python scripts/bench/up_local.py [-n 5] [--quick] [--json]

--quick: one sample per size, 2 machines versus 1 (not 8) and `train.py --epochs 1` (checks the
bench, not figures to quote).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (REPO, bench_parser, check_samples, clean_env, fleet_argv, median_row, ratio_row,  # noqa: E402
                     run_bench, say)

EXAMPLE = REPO / "examples" / "digits"
SIZES = (1, 8)
QUICK_SIZES = (1, 2)
TARGETS = {"first": "<= 2", "total": "<= 1.5"}
RANK_LINE = re.compile(r"^\[\d+\] ")
GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "-c", "commit.gpgsign=false"]


def checkout(root: Path) -> Path:
    """examples/digits in a fresh git repository with everything committed."""
    exp = root / "digits"
    shutil.copytree(EXAMPLE, exp, ignore=shutil.ignore_patterns("outputs", "runs", "__pycache__", ".fleet"))
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "digits"]):
        subprocess.run([*GIT, *argv], cwd=exp, check=True, capture_output=True)
    return exp


def one_up(gpus: int, exp: Path, env: dict, extra: list[str]) -> tuple[float, float, float]:
    """(seconds to the first rank line, to exit, to fleet's `setup:` line) of one `fleet up --gpus N`."""
    start = time.perf_counter()
    proc = subprocess.Popen([*fleet_argv(), "up", "--gpus", str(gpus), *extra], cwd=exp, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err: list[str] = []
    setup_at: list[float] = []

    def drain() -> None:                  # read at once, line by line: stderr never blocks fleet
        assert proc.stderr is not None
        for line in proc.stderr:
            if not setup_at and line.startswith("fleet: setup:"):
                setup_at.append(time.perf_counter() - start)
            err.append(line)
    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    first = None
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        if first is None and RANK_LINE.match(line):
            first = time.perf_counter() - start
        tail = (tail + [line])[-5:]
    proc.wait()
    total = time.perf_counter() - start
    reader.join(10)
    if proc.returncode != 0 or first is None or not setup_at:
        last = ("".join(err).strip().splitlines() or tail or ["no output"])[-1]
        raise RuntimeError(f"fleet up --gpus {gpus} exited {proc.returncode}"
                           f"{'' if first else ' with no rank line'}{'' if setup_at else ' with no setup line'}: "
                           f"{last.strip()[:200]}")
    return first, total, setup_at[0]


def experiment_spec(exp: Path, quick: bool) -> tuple[str, str, dict[str, str]]:
    """The example's own `setup`, `command` and `[env]`, read from its fleet.toml."""
    import tomllib
    config = tomllib.loads((exp / "fleet.toml").read_text())
    command = "python train.py --epochs 1" if quick else config["command"]
    return config.get("setup", ""), command, {k: str(v) for k, v in config.get("env", {}).items()}


def experiment_alone(n: int, exp: Path, env: dict, quick: bool, out: Path) -> tuple[float, float]:
    """(seconds to the first line, to the last exit) of the experiment with no fleet: `setup` in n
    processes at once, then, when all succeeded, `command` in n processes at once."""
    setup, command, extra = experiment_spec(exp, quick)
    python = Path(fleet_argv()[0]).parent / "python"
    bindir = str(python.parent if python.exists() else Path(sys.executable).parent)
    # No byte code written into the checkout: fleet pins it from git, and a dirty tree would change that.
    base = {**env, **extra, "PATH": f"{bindir}:{env.get('PATH', os.defpath)}", "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1", "FLEET_NUM_NODES": str(n), "FLEET_WORLD_SIZE": str(n)}

    def rank_env(r: int) -> dict:
        return {**base, "FLEET_NODE_RANK": str(r), "FLEET_RANK": str(r), "FLEET_LOCAL_RANK": "0",
                "FLEET_OUTPUT_DIR": str(out / f"rank-{r}")}
    start = time.perf_counter()
    if setup:
        setups = [subprocess.Popen(["sh", "-c", setup], cwd=exp, env=rank_env(r), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL) for r in range(n)]
        if any(p.wait() != 0 for p in setups):
            raise RuntimeError(f"the experiment's setup failed on its own ({n} at once): {setup}")
    procs = [subprocess.Popen(["sh", "-c", command], cwd=exp, env=rank_env(r), stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True) for r in range(n)]
    firsts: list[float] = []
    lock = threading.Lock()

    def read(proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        if proc.stdout.readline():
            with lock:
                firsts.append(time.perf_counter() - start)
        proc.stdout.read()
    readers = [threading.Thread(target=read, args=(p,), daemon=True) for p in procs]
    for t in readers:
        t.start()
    for t in readers:
        t.join()
    if any(p.wait() != 0 for p in procs) or not firsts:
        raise RuntimeError(f"the experiment's command failed on its own ({n} at once): {command}")
    return min(firsts), time.perf_counter() - start


def measure(samples: int, quick: bool) -> list[dict]:
    extra = ["--", "python", "train.py", "--epochs", "1"] if quick else []
    sizes = QUICK_SIZES if quick else SIZES
    big = sizes[-1]
    first: dict[int, list[float]] = {n: [] for n in sizes}
    total: dict[int, list[float]] = {n: [] for n in sizes}
    own: dict[int, list[float]] = {n: [] for n in sizes}
    alone_first: dict[int, list[float]] = {n: [] for n in sizes}
    alone_total: dict[int, list[float]] = {n: [] for n in sizes}
    rows = []
    with tempfile.TemporaryDirectory(prefix="fleet-bench-up-") as tmp:
        exp = checkout(Path(tmp))
        env = clean_env(FLEET_HOME=str(Path(tmp) / "home"), CI="true")
        for n in sizes:                                   # cold: caches, the lease venv, numpy check
            f, t, _s = one_up(n, exp, env, extra)
            say(f"cold run, {n} machine(s): first line {f:.2f} s, total {t:.2f} s")
            rows += [median_row(f"cold first log line, {n} machine(s)", [f], "s"),
                     median_row(f"cold total, {n} machine(s)", [t], "s")]
        for rnd in range(samples):
            for n in (sizes if rnd % 2 == 0 else sizes[::-1]):
                f, t, s = one_up(n, exp, env, extra)
                first[n].append(f)
                total[n].append(t)
                own[n].append(s)
                say(f"round {rnd + 1}/{samples}, {n} machine(s): first line {f:.2f} s, total {t:.2f} s, "
                    f"fleet's phases to the setup line {s:.2f} s")
                f, t = experiment_alone(n, exp, env, quick, Path(tmp) / f"alone-{rnd}-{n}")
                alone_first[n].append(f)
                alone_total[n].append(t)
                say(f"round {rnd + 1}/{samples}, the experiment alone, {n} at once: first line {f:.2f} s, "
                    f"total {t:.2f} s")
    for n in sizes:
        rows.append(median_row(f"first log line, {n} machine(s)", first[n], "s"))
        rows.append(median_row(f"total, {n} machine(s)", total[n], "s"))
    rows.append(ratio_row(f"first log line, {big} machines / 1", first[big], first[1], TARGETS["first"]))
    rows.append(ratio_row(f"total, {big} machines / 1", total[big], total[1], TARGETS["total"]))
    for n in sizes:
        rows.append(median_row(f"start -> fleet's setup line (lease, ready, stage), {n} machine(s)", own[n], "s"))
    rows.append(ratio_row(f"start -> fleet's setup line, {big} machines / 1", own[big], own[1], None))
    for n in sizes:
        rows.append(median_row(f"the experiment alone (no fleet), first line, {n} at once", alone_first[n], "s"))
        rows.append(median_row(f"the experiment alone (no fleet), total, {n} at once", alone_total[n], "s"))
    rows.append(ratio_row(f"the experiment alone (no fleet), first line, {big} / 1", alone_first[big], alone_first[1],
                          None))
    rows.append(ratio_row(f"the experiment alone (no fleet), total, {big} / 1", alone_total[big], alone_total[1],
                          None))
    return rows


def main() -> int:
    parser = bench_parser(__doc__.splitlines()[0])
    args = parser.parse_args()
    check_samples(parser, args)
    big = (QUICK_SIZES if args.quick else SIZES)[-1]
    return run_bench("up_local", args, lambda: measure(1 if args.quick else args.samples, args.quick),
                     [(f"first log line, {big} machines / 1", "x", TARGETS["first"]),
                      (f"total, {big} machines / 1", "x", TARGETS["total"])])


if __name__ == "__main__":
    sys.exit(main())
