#!/usr/bin/env python3
"""`fleet snapshot create` against `sha256sum`, both as whole processes, side by side in one run.

A tree of mixed files (a quarter of the bytes in many small files of 1-128 KiB, the rest in large
files of size/8 each; random bytes, so nothing dedupes) is written, then read once so the page cache
is warm for both sides (cold-cache disk speed is not what is compared). Each of N samples (default
5, interleaved, so a busy machine slows both alike) runs, in a fresh FLEET_HOME and a fresh store:
  1. `fleet snapshot create TREE --store S`   (chunk, hash, store, fsync, publish)
  2. `fleet snapshot create TREE --store S`   again, tree unchanged (the stat cache's case)
  3. `sha256sum` of every file of the tree     (find -print0 | xargs -0 sha256sum)
Figures are medians with their spread (min-max). Then, once (it takes minutes under load), peak RSS
of `fleet snapshot create` over sparse files totalling --rss-size (default 10 GiB), read from
wait4's ru_maxrss of that process alone.

Targets (issue 19): create ≥ 300 MB/s; create ≥ 0.5 × sha256sum's throughput; unchanged
re-snapshot ≤ 0.2 s; peak RSS ≤ 300 MB. Throughput is in MB/s (10^6 bytes).

    python scripts/bench/snapshot.py [--size 1G] [--rss-size 10G] [-n 5] [--json]

`--json` prints ONLY a JSON list of {"figure", "value", "unit", "target", "met"} (plus "spread") on
stdout; everything else goes to stderr. Informative rows have met null. A failed command is reported
as failed (value null, met false), never as met.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_MBPS = 300.0
TARGET_RATIO = 0.5
TARGET_RESNAP_S = 0.2
TARGET_RSS_MB = 300.0


def log(msg: str) -> None:
    print(f"bench/snapshot: {msg}", file=sys.stderr, flush=True)


def parse_size(text: str) -> int:
    t = text.strip().lower().rstrip("b").rstrip("i")
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}.get(t[-1:], 1)
    return int(float(t.rstrip("kmgt")) * mult)


def fleet_executable() -> str:
    beside = Path(sys.executable).parent / "fleet"
    found = str(beside) if beside.exists() else shutil.which("fleet")
    if not found:
        sys.exit("bench/snapshot: no `fleet` entry point found (pip install -e .)")
    return found


def make_tree(root: Path, size: int, seed: int = 19) -> tuple[int, int]:
    """(files, bytes). Random content in 4 MiB writes."""
    rng = random.Random(seed)
    small_budget, large = size // 4, 8
    n_files = written = 0
    i = 0
    while written < small_budget:
        n = min(rng.randint(1024, 128 * 1024), small_budget - written)
        d = root / "small" / f"d{i // 500:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:06d}.bin").write_bytes(os.urandom(n))
        written += n
        n_files += 1
        i += 1
    each = (size - written) // large
    (root / "large").mkdir(parents=True, exist_ok=True)
    for j in range(large):
        with open(root / "large" / f"part-{j}.bin", "wb") as f:
            left = each
            while left:
                n = min(left, 4 << 20)
                f.write(os.urandom(n))
                left -= n
        written += each
        n_files += 1
    old = time.time() - 60           # older than the stat cache's racy window, as real data would be
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            os.utime(os.path.join(dirpath, name), (old, old))
    return n_files, written


def warm(root: Path) -> None:
    buf = bytearray(8 << 20)
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb", buffering=0) as f:
                while f.readinto(buf):
                    pass


def run(argv, env: dict[str, str], shell: bool = False) -> tuple[float, int, str, str]:
    """(wall s, exit code, stdout, last stderr line) of one whole process; its CPU seconds go to CPU."""
    import resource
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, shell=shell, timeout=3600)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    lines = proc.stderr.decode(errors="replace").strip().splitlines()
    return wall, proc.returncode, proc.stdout.decode(errors="replace"), lines[-1] if lines else ""


CPU: list[float] = []


def run_rss(argv: list[str], env: dict[str, str]) -> tuple[float, float, int, str]:
    """(wall s, peak RSS MB, exit code, last stderr line): wait4 gives this process's own ru_maxrss."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _pid, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        err.seek(0)
        lines = err.read().decode(errors="replace").strip().splitlines()
    return wall, usage.ru_maxrss * 1024 / 1e6, proc.returncode, lines[-1] if lines else ""


def stats(samples: list[float]) -> tuple[float, str]:
    med = statistics.median(samples)
    return med, f"{min(samples):.3g}-{max(samples):.3g}"


def row(figure, value, unit, target=None, met=None, spread=None, error=None) -> dict:
    r = {"figure": figure, "value": None if value is None else round(value, 3), "unit": unit,
         "target": target, "met": met}
    if spread:
        r["spread"] = spread
    if error:
        r["error"] = error
    return r


def measure_throughput(fleet: str, tree: Path, work: Path, size: int, runs: int) -> list[dict]:
    files_list = work / "files.txt"
    creates, resnaps, sums, failures = [], [], [], {}
    cpu: dict[str, list[float]] = {"create": [], "resnap": [], "sha": []}
    for i in range(runs):
        home, store = work / f"home-{i}", work / f"store-{i}"
        env = {**os.environ, "FLEET_HOME": str(home), "CI": "true"}
        env.pop("FLEET_DEBUG", None)
        order = ["fleet", "sha"] if i % 2 == 0 else ["sha", "fleet"]
        for side in order:
            if side == "sha":
                wall, code, _, err = run(f"xargs -0 sha256sum < {files_list} > /dev/null", env, shell=True)
                if code:
                    failures["sha"] = f"exit {code}: {err}"
                else:
                    sums.append(wall)
                    cpu["sha"].append(CPU[-1])
                continue
            argv = [fleet, "snapshot", "create", str(tree), "--store", str(store), "--json"]
            wall, code, out, err = run(argv, env)
            if code:
                failures["create"] = f"exit {code}: {err}"
                continue
            first = json.loads(out)
            creates.append(wall)
            cpu["create"].append(CPU[-1])
            wall2, code, out, err = run(argv, env)
            if code:
                failures["resnap"] = f"exit {code}: {err}"
                continue
            again = json.loads(out)
            if again["id"] != first["id"] or again["bytes_hashed"] != 0:
                failures["resnap"] = f"re-snapshot read {again['bytes_hashed']} bytes or changed id"
            resnaps.append(wall2)
            cpu["resnap"].append(CPU[-1])
            log(f"sample {i + 1}/{runs}: create {wall:.2f} s ({size / wall / 1e6:.0f} MB/s), "
                f"unchanged re-snapshot {wall2:.3f} s")
        if sums:
            log(f"sample {i + 1}/{runs}: sha256sum {sums[-1]:.2f} s ({size / sums[-1] / 1e6:.0f} MB/s)")
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(store, ignore_errors=True)
    rows = []
    if creates and "create" not in failures:
        med, spread = stats([size / w / 1e6 for w in creates])
        rows.append(row("fleet snapshot create, throughput", med, "MB/s", f">= {TARGET_MBPS:.0f}",
                        med >= TARGET_MBPS, spread))
    else:
        rows.append(row("fleet snapshot create, throughput", None, "MB/s", f">= {TARGET_MBPS:.0f}", False,
                        error=failures.get("create")))
    if sums and "sha" not in failures:
        med_sha, spread = stats([size / w / 1e6 for w in sums])
        rows.append(row("sha256sum of the same files, throughput (reference)", med_sha, "MB/s", spread=spread))
    if creates and sums and "create" not in failures and "sha" not in failures:
        ratios = [(size / c) / (size / s) for c, s in zip(creates, sums)]
        med, spread = stats(ratios)
        rows.append(row("fleet snapshot create / sha256sum throughput", med, "x", f">= {TARGET_RATIO}",
                        med >= TARGET_RATIO, spread))
    else:
        rows.append(row("fleet snapshot create / sha256sum throughput", None, "x", f">= {TARGET_RATIO}", False,
                        error=failures.get("create") or failures.get("sha")))
    if resnaps and "resnap" not in failures:
        med, spread = stats(resnaps)
        rows.append(row("re-snapshot of the unchanged tree (whole process)", med, "s", f"<= {TARGET_RESNAP_S}",
                        med <= TARGET_RESNAP_S, spread))
    else:
        rows.append(row("re-snapshot of the unchanged tree (whole process)", None, "s", f"<= {TARGET_RESNAP_S}",
                        False, error=failures.get("resnap")))
    for kind, label in (("create", "fleet snapshot create"), ("sha", "sha256sum"),
                        ("resnap", "unchanged re-snapshot")):
        if cpu[kind]:
            med, spread = stats(cpu[kind])
            rows.append(row(f"{label}, CPU seconds (user+sys, all threads)", med, "s", spread=spread))
    return rows


def measure_startup(fleet: str, runs: int) -> dict:
    """`fleet --help` as a whole process: the part of every figure above that is start-up alone."""
    env = {**os.environ}
    walls = []
    for _ in range(runs):
        wall, code, _, _ = run([fleet, "--help"], env)
        if code == 0:
            walls.append(wall)
    med, spread = stats(walls) if walls else (None, None)
    return row("fleet --help (process start-up, reference)", med, "s", spread=spread)


def measure_rss(fleet: str, work: Path, rss_size: int) -> list[dict]:
    tree = work / "sparse"
    tree.mkdir()
    parts = 10
    for j in range(parts):
        with open(tree / f"sparse-{j}.bin", "wb") as f:
            f.truncate(rss_size // parts)
    env = {**os.environ, "FLEET_HOME": str(work / "home-rss"), "CI": "true"}
    log(f"peak RSS: snapshotting {rss_size / 2**30:.1f} GiB of sparse files (one sample) ...")
    wall, rss, code, err = run_rss([fleet, "snapshot", "create", str(tree), "--store", str(work / "store-rss")], env)
    shutil.rmtree(tree, ignore_errors=True)
    label = f"peak RSS, snapshot create of {rss_size / 2**30:.0f} GiB"
    if code:
        return [row(label, None, "MB", f"<= {TARGET_RSS_MB:.0f}", False, error=f"exit {code}: {err}")]
    log(f"peak RSS {rss:.0f} MB in {wall:.1f} s ({rss_size / wall / 1e6:.0f} MB/s)")
    return [row(label, rss, "MB", f"<= {TARGET_RSS_MB:.0f}", rss <= TARGET_RSS_MB),
            row(f"snapshot create of {rss_size / 2**30:.0f} GiB sparse, throughput (one sample)",
                rss_size / wall / 1e6, "MB/s")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1G", help="mixed tree size (default 1G; e.g. 100M for a quick run)")
    ap.add_argument("--rss-size", default="10G", help="sparse tree for the peak RSS figure (0 to skip)")
    ap.add_argument("-n", "--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print only a JSON list of figures on stdout")
    ap.add_argument("--workdir", default=None, help="where the trees and stores go (default: a temp dir)")
    args = ap.parse_args()
    size, rss_size = parse_size(args.size), parse_size(args.rss_size)
    fleet = fleet_executable()
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-snapshot-", dir=args.workdir))
    try:
        tree = work / "tree"
        t0 = time.monotonic()
        n_files, total = make_tree(tree, size)
        with open(work / "files.txt", "wb") as f:
            for dirpath, _dirs, files in sorted(os.walk(tree)):
                for name in sorted(files):
                    f.write(os.path.join(dirpath, name).encode() + b"\0")
        warm(tree)
        time.sleep(2.5)     # past the stat cache's racy window: data is not snapshotted the instant it is written
        log(f"tree: {n_files} files, {total / 2**20:.0f} MiB (made and read once in {time.monotonic() - t0:.0f} s); "
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        rows = measure_throughput(fleet, tree, work, total, args.runs)
        rows.append(measure_startup(fleet, args.runs))
        rows.append(row("load average (1 min) at the end", os.getloadavg()[0], "", spread=None))
        shutil.rmtree(tree, ignore_errors=True)
        if rss_size:
            rows += measure_rss(fleet, work, rss_size)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        value = "FAILED" if r["value"] is None else f"{r['value']} {r['unit']}"
        verdict = "" if r["target"] is None else f"  target {r['target']}: {'met' if r['met'] else 'MISSED'}"
        spread = f"  [{r['spread']}]" if r.get("spread") else ""
        print(f"{r['figure']:<58} {value:>14}{spread}{verdict}{'  ' + r['error'] if r.get('error') else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
