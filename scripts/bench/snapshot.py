#!/usr/bin/env python3
"""`fleet snapshot create` against `sha256sum`, both as whole processes, side by side in one run.

A tree of mixed files (a quarter of the bytes in many small files of 1-128 KiB, the rest in large
files of size/8 each; random bytes, so nothing dedupes) is written, then read once so the page cache
is warm for both sides (cold-cache disk speed is not what is compared). Each of N samples (default
5, interleaved, so a busy machine slows both alike) runs, in a fresh FLEET_HOME and a fresh store:
  1. `fleet snapshot create TREE --store S`   (chunk, hash, store, fsync, publish)
  2. `fleet snapshot create TREE --store S`   again, tree unchanged (the stat cache's case)
  3. `sha256sum` of every file of the tree     (find -print0 | xargs -0 sha256sum)
Every sample's store is kept until all samples are done: deleting the last sample's thousands of
chunk files just before the next create would make ext4 (without a journal, as here) skip each
recently freed inode, with a buffer lookup apiece, for a minute after the delete (`recently_deleted`
took a quarter of a create's CPU in `perf record`), a cost of the benchmark's own clean-up that a
user's create does not pay. Figures are medians with their spread (min-max). Then, once (it takes minutes under load), peak RSS
of `fleet snapshot create` over sparse files totalling --rss-size (default 10 GiB), read from
wait4's ru_maxrss of that process alone.

Targets (issue 19): create ≥ 300 MB/s; create ≥ 0.5 × sha256sum's throughput; unchanged
re-snapshot ≤ 0.2 s; peak RSS ≤ 300 MB. Throughput is in MB/s (10^6 bytes).

    python scripts/bench/snapshot.py [--size 1G] [--rss-size 10G] [-n 5] [--quick] [--json]

Conventions of scripts/bench/_common.py: `--json` prints ONLY a JSON list of {"figure", "value",
"unit", "target", "met"} (plus min, max and every sample) on stdout, everything else goes to
stderr; informative rows have met null; a failed command is reported as failed (value null, met
false), never as met. `--quick`: 32 MiB, 2 samples, 256 MiB for the RSS figure (checks the bench
works; not figures to quote).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (bench_parser, check_samples, emit, exit_code, failed_row, json_stdout, load_row,  # noqa: E402
                     median_row, row)

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
    for i in range(runs):
        shutil.rmtree(work / f"home-{i}", ignore_errors=True)
        shutil.rmtree(work / f"store-{i}", ignore_errors=True)
    rows = []
    create_fig = "fleet snapshot create, throughput"
    if creates and "create" not in failures:
        rows.append(median_row(create_fig, [size / w / 1e6 for w in creates], "MB/s", f">= {TARGET_MBPS:.0f}",
                               digits=1))
    else:
        rows.append(failed_row(create_fig, "MB/s", failures.get("create", "no samples"), f">= {TARGET_MBPS:.0f}"))
    if sums and "sha" not in failures:
        rows.append(median_row("sha256sum of the same files, throughput (reference)", [size / w / 1e6 for w in sums],
                               "MB/s", digits=1))
    ratio_fig = "fleet snapshot create / sha256sum throughput"
    if creates and sums and "create" not in failures and "sha" not in failures:
        # per interleaved pair: sha256sum's time over fleet's (throughput ratio)
        rows.append(median_row(ratio_fig, [s_ / c for c, s_ in zip(creates, sums)], "x", f">= {TARGET_RATIO}",
                               digits=2))
    else:
        rows.append(failed_row(ratio_fig, "x", failures.get("create") or failures.get("sha") or "no samples",
                               f">= {TARGET_RATIO}"))
    resnap_fig = "re-snapshot of the unchanged tree (whole process)"
    if resnaps and "resnap" not in failures:
        rows.append(median_row(resnap_fig, resnaps, "s", f"<= {TARGET_RESNAP_S}"))
    else:
        rows.append(failed_row(resnap_fig, "s", failures.get("resnap", "no samples"), f"<= {TARGET_RESNAP_S}"))
    for kind, label in (("create", "fleet snapshot create"), ("sha", "sha256sum"),
                        ("resnap", "unchanged re-snapshot")):
        if cpu[kind]:
            rows.append(median_row(f"{label}, CPU seconds (user+sys, all threads)", cpu[kind], "s"))
    return rows


def measure_startup(fleet: str, runs: int) -> dict:
    """`fleet --help` as a whole process: the part of every figure above that is start-up alone."""
    env = {**os.environ}
    walls = []
    for _ in range(runs):
        wall, code, _, _ = run([fleet, "--help"], env)
        if code == 0:
            walls.append(wall)
    if not walls:
        return failed_row("fleet --help (process start-up, reference)", "s", "fleet --help failed")
    return median_row("fleet --help (process start-up, reference)", walls, "s")


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
    label = f"peak RSS, snapshot create of {rss_size / 2**30:.2f} GiB"
    if code:
        return [failed_row(label, "MB", f"exit {code}: {err}", f"<= {TARGET_RSS_MB:.0f}")]
    log(f"peak RSS {rss:.0f} MB in {wall:.1f} s ({rss_size / wall / 1e6:.0f} MB/s)")
    return [row(label, round(rss, 1), "MB", f"<= {TARGET_RSS_MB:.0f}"),
            row(f"snapshot create of {rss_size / 2**30:.2f} GiB sparse, throughput (one sample)",
                round(rss_size / wall / 1e6, 1), "MB/s")]


def main() -> int:
    ap = bench_parser(__doc__.splitlines()[0])
    ap.add_argument("--size", default=None, help="mixed tree size (default 1G; 32M with --quick)")
    ap.add_argument("--rss-size", default=None, help="sparse tree for the peak RSS figure (default 10G; 0 to skip)")
    ap.add_argument("--workdir", default=None, help="where the trees and stores go (default: a temp dir)")
    args = ap.parse_args()
    check_samples(ap, args)
    size = parse_size(args.size or ("32M" if args.quick else "1G"))
    rss_size = parse_size(args.rss_size or ("256M" if args.quick else "10G"))
    runs = min(args.samples, 2) if args.quick else args.samples
    with json_stdout(args.json) as out:
        rows = [load_row()]
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
            rows += measure_throughput(fleet, tree, work, total, runs)
            rows.append(measure_startup(fleet, runs))
            shutil.rmtree(tree, ignore_errors=True)
            if rss_size:
                rows += measure_rss(fleet, work, rss_size)
            rows.append(load_row("at the end"))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        emit(rows, as_json=args.json, out=out)
    return exit_code(rows)


if __name__ == "__main__":
    sys.exit(main())
