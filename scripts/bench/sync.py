"""Benchmark: fleet's snapshot sync against `rsync -a` over the same kind of local sshd, like for like.

Both sides run as whole processes (fleet: a fresh Python process that snapshots the tree into its
store and syncs it; rsync: rsync over ssh), and the bytes on the wire are counted by a TCP proxy on
loopback between the client and the sshd, both directions, for both. Each figure is the median of
--samples runs (spread printed beside it); a missed target is reported as missed.

Figures:
  first_sync_vs_rsync       rsync time / fleet time, fresh machine, fresh store and host cache, the
                            snapshot creation inside fleet's time                              (>= 1.0)
  noop_resync_vs_rsync      fleet time / rsync time, nothing changed (fleet re-snapshots too)  (<= 1.0)
  files_1pct_wire_ratio     fleet wire bytes / bytes changed, 1 % of the files rewritten       (<= 2.0)
  files_1pct_time_vs_rsync  fleet time / rsync time, same change                              (<= 1.0)
  inside_file_wire_ratio    fleet wire bytes / bytes changed, 2 MiB rewritten in a 30 MiB file (<= 2.0)
  inside_file_time_vs_rsync fleet time / rsync time, same change                              (<= 1.0)
  fanout_8_vs_1             fleet sync time to 8 fresh machines / to 1 (one host: 2 cores shared
                            by controller and every sshd)                                     (<= 4.0)
  fanout_8_hosts_controller_bytes  the same 8 machines as separate hosts (a chunk cache each): chunk
                            bytes the controller sent, per copy of the data (the first host
                            forwards to the others)                                           (<= 1.05)
  fanout_8_hosts_vs_1       their sync time / one machine's (informative: one host's 2 cores run
                            every host's TLS and SSH here)
  fanout_8_hosts_*_without_peers  the same two with FLEET_SYNC_PEERS=0 (informative: the
                            controller feeds every host)
  second_run_chunk_bytes    chunk bytes a new lease on the same host receives for the same data (== 0)
  rsync_* wire figures are informative (met null).
  first_sync_overlap_ceiling_vs_rsync  rsync time / the time of fleet's snapshot creation run at the
                            same time as a sync of that snapshot (already made, from a copy of the
                            store) to a fresh machine: what overlapping creation with sending could
                            reach at best (_sync_fleet.py's "ceiling"). Informative.
  first_sync_floor_vs_rsync rsync alone / rsync with, at the same time, the copies fleet keeps done by C
                            tools (`cp -r` of the tree into a store and `openssl dgst -sha256` of every
                            file; `cp -r` of it into a host cache): no chunking, no Python, perfect
                            overlap. Informative: what the first sync's target allows here at best
                            for a design that keeps a content-addressed store and a per-host cache.

Fleet's process (scripts/bench/_sync_fleet.py, which imports only fleet) dials the machines first (`sync_channel.dial`: SSH key exchange, login and the helper's start
overlap the snapshot being made, as in `fleet up`, whose connections are up before staging); the key
exchange is OpenSSH's default on both sides.

Conventions of scripts/bench/_common.py (`--json` prints only the figures, medians with their
spread, informative rows met null). `--quick`: 24 MiB, 1 sample, fan-out to 2 machines (checks the
bench works; not figures to quote).

Usage: python scripts/bench/sync.py [--json] [--quick] [--size 200] [-n 5]
"""
from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FLEET_SIDE = Path(__file__).resolve().parent / "_sync_fleet.py"     # fleet's side: a small process of its own
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _proxy import Proxy  # noqa: E402
from _common import (bench_parser, check_samples, emit, exit_code, failed_row, json_stdout,  # noqa: E402
                     load_row, median_row, ratio_row, row)


def make_tree(root: Path, size_mib: int, seed: int = 1) -> tuple[list[Path], Path]:
    """~25 % of the bytes in small files (1-48 KiB), one 30 MiB file, the rest in a few large ones."""
    rng = random.Random(seed)
    files = []
    total = size_mib * 2 ** 20
    small = total // 4
    i = 0
    while small > 0:
        n = rng.randint(1024, 48 * 1024)
        p = root / f"small/d{i % 40:02d}/f{i:05d}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rng.randbytes(n))
        files.append(p)
        small -= n
        i += 1
    big = root / "large/big30.bin"
    big.parent.mkdir(parents=True, exist_ok=True)
    big_size = min(30 * 2 ** 20, total // 4)
    big.write_bytes(rng.randbytes(big_size))
    files.append(big)
    rest = total - total // 4 - big_size
    for j in range(4):
        p = root / f"large/L{j}.bin"
        p.write_bytes(rng.randbytes(rest // 4))
        files.append(p)
    return files, big


# -- fleet's side, as its own process ------------------------------------------------------------------
def run_fleet(machines, tree: Path, dest: str, home: Path, **extra) -> tuple[float, dict]:
    from fleet.models import to_jsonable
    spec = json.dumps({"machines": [to_jsonable(m) for m in machines], "tree": str(tree), "dest": dest, **extra})
    env = {**os.environ, "FLEET_HOME": str(home)}
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, str(FLEET_SIDE), spec], env={**env, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=900)
    dt = time.monotonic() - t0
    if out.returncode != 0:
        raise SystemExit(f"fleet side failed: {out.stderr[-2000:]}")
    return dt, json.loads(out.stdout.strip().splitlines()[-1])


def run_rsync(machine, src: Path, dest: str, known_hosts: Path) -> float:
    known_hosts.write_text(f"[{machine.host}]:{machine.port} {machine.host_key}\n")
    ssh = (f"ssh -p {machine.port} -i {machine.key_path} -o UserKnownHostsFile={known_hosts} "
           "-o StrictHostKeyChecking=yes -o BatchMode=yes -o IdentitiesOnly=yes -o ControlPath=none")
    t0 = time.monotonic()
    subprocess.run(["rsync", "-a", "--delete", "-e", ssh, f"{src}/", f"{machine.user}@{machine.host}:{dest}/"],
                   capture_output=True, text=True, check=True, timeout=900)
    return time.monotonic() - t0


class Machines:
    def __init__(self):
        from fleet.ids import new_lease_id
        from fleet.plan import make_plan
        from fleet.providers.local import LocalProvider
        self.provider = LocalProvider()
        self._plan = lambda n: make_plan(provider="local", template=self.provider.template("local-1gpu"), gpus=n,
                                         max_duration_s=3600, heartbeat_ttl_s=3600, project="bench", user="bench")
        self._new_id = new_lease_id
        self.leases = []

    def lease(self, n: int):
        lease = self.provider.lease(self._plan(n), self._new_id(), 3600)
        self.leases.append(lease)
        from fleet.remote.ssh import wait_ready
        for m in lease.machines:
            wait_ready(m, timeout=120).close()
        return lease.machines

    def close(self):
        for lease in self.leases:
            try:
                self.provider.release(lease)
            except Exception as exc:  # noqa: BLE001
                print(f"warning: release failed: {exc}", file=sys.stderr)


def first_sync_floor(ref, tree: Path, work: Path, kh: Path, n: int) -> dict:
    """rsync alone vs rsync beside the extra writes and hashing a store and a host cache imply (see the
    module notes), n interleaved pairs: rsync's time over the floor's, as first_sync_vs_rsync is."""
    alone, floor = [], []
    for i in range(n):
        alone.append(run_rsync(ref, tree, f"{ref.workdir}/floor-a{i}", kh))
        t0 = time.monotonic()
        extra = [subprocess.Popen(["sh", "-c", 'cp -r "$0" "$1" && find "$0" -type f -exec openssl dgst -sha256 {} +',
                                   str(tree), str(work / f"floor-store{i}")], stdout=subprocess.DEVNULL),
                 subprocess.Popen(["cp", "-r", str(tree), str(work / f"floor-cache{i}")])]
        run_rsync(ref, tree, f"{ref.workdir}/floor-b{i}", kh)
        if any(p.wait() != 0 for p in extra):
            raise SystemExit("the floor's copies failed")
        floor.append(time.monotonic() - t0)
    say(f"first sync floor: rsync alone {med(alone):.2f}s ({spread(alone)}), with the store's and host cache's "
        f"copies at once {med(floor):.2f}s ({spread(floor)})")
    out = ratio_row("first_sync_floor_vs_rsync", alone, floor, None)
    out["unit"] = "x rsync throughput"
    return out


def overlap_ceiling(sides: Sides, tree: Path, work: Path, i: int) -> float:
    """One sample of the ceiling (module notes), through the same proxy as the pairs: a fresh home
    and host cache, the last pair's snapshot synced from a linked copy of its store while the tree is
    snapshotted again into the fresh one."""
    made = work / f"ceiling-store-{i}"
    shutil.copytree(work / f"home-first-{i}" / "store", made, copy_function=os.link)
    dt, _out = run_fleet([sides.ours_p], tree, f"ceiling{i}", work / f"home-ceiling-{i}",
                         ceiling={"store": str(made), "id": sides.last["id"]})
    sides.p_ours.take()           # its bytes are not the pairs'
    return dt


def fanout_hosts(many, tree: Path, home: Path, work: Path, n: int, t1: list[float], total: int) -> list[dict]:
    """The same machines as separate hosts (a chunk cache each, as AWS instances or team hosts have):
    the controller's chunk bytes per copy of the data (each chunk once: the first host forwards them
    to the others, sync_peers), and the time against one machine (informative: here every host's
    TLS and SSH share the same 2 cores); then the same with FLEET_SYNC_PEERS=0 (every host fed by
    the controller), for the comparison."""
    def samples(label: str) -> tuple[list[float], list[float]]:
        sent, took = [], []
        for i in range(n):
            hosts = [replace(m, provider_ref={**m.provider_ref, "sandbox_dir": str(work / f"{label}{i}" / m.id)})
                     for m in many]
            h = work / f"home-{label}-{i}"
            shutil.copytree(home / "store", h / "store", copy_function=os.link)
            _dt, out = run_fleet(hosts, tree, f"{label}{i}", h)
            sent.append(out["chunk_bytes"] / total)
            took.append(out["sync_s"])
        return sent, took
    sent, tn = samples("hosts")
    os.environ["FLEET_SYNC_PEERS"] = "0"
    try:
        pushed, tp = samples("push")
    finally:
        del os.environ["FLEET_SYNC_PEERS"]
    say(f"fan-out to {len(many)} hosts: controller sent {med(sent):.3f}x the data ({spread(sent)}), "
        f"{med(tn):.2f}s ({spread(tn)}) against {med(t1):.2f}s for one machine; without peers "
        f"{med(pushed):.3f}x the data, {med(tp):.2f}s ({spread(tp)})")
    return [median_row(f"fanout_{len(many)}_hosts_controller_bytes", sent, "x data", "<= 1.05", digits=3),
            ratio_row(f"fanout_{len(many)}_hosts_vs_1", tn, t1, None),
            median_row(f"fanout_{len(many)}_hosts_controller_bytes_without_peers", pushed, "x data", digits=3),
            ratio_row(f"fanout_{len(many)}_hosts_vs_1_without_peers", tp, t1, None)]


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float]) -> str:
    return f"{min(xs):.3g}–{max(xs):.3g}"


class Sides:
    """Fleet's machine and rsync's, each behind its own counting proxy, and one sample of each."""

    def __init__(self, ours, ref, work: Path):
        self.ours, self.ref = ours, ref
        self.p_ours, self.p_ref = Proxy(ours.port), Proxy(ref.port)
        self.ours_p, self.ref_p = replace(ours, port=self.p_ours.port), replace(ref, port=self.p_ref.port)
        self.kh = work / "kh"
        self.last: dict = {}          # fleet's answer in the last pair (its snapshot id)

    def pair(self, tree: Path, dest: str, home: Path) -> tuple[float, int, float, int]:
        """(fleet s, fleet wire bytes, rsync s, rsync wire bytes) of one interleaved pair."""
        dt, self.last = run_fleet([self.ours_p], tree, dest, home)
        w_f = self.p_ours.take()
        t_r = run_rsync(self.ref_p, tree, f"{self.ref.workdir}/{dest}", self.kh)
        return dt, w_f, t_r, self.p_ref.take()


def measure_change(sides: Sides, tree: Path, dest: str, home: Path, n: int, change, label: str,
                   key: str) -> list[dict]:
    """`change()` edits the tree and returns the bytes it changed; then one fleet and one rsync sync,
    n times: time ratio and wire bytes per changed byte for both."""
    t_f, t_r, w_f, w_r, ch = [], [], [], [], []
    for _ in range(n):
        changed = change()
        ch.append(changed)
        a, b, c, d = sides.pair(tree, dest, home)
        t_f.append(a)
        w_f.append(b / changed)
        t_r.append(c)
        w_r.append(d / changed)
    say(f"{label} ({med(ch) / 2**20:.2f} MiB): fleet {med(t_f):.3f}s ({spread(t_f)}) wire {med(w_f):.2f}x "
        f"({spread(w_f)}); rsync {med(t_r):.3f}s ({spread(t_r)}) wire {med(w_r):.2f}x")
    return [median_row(f"{key}_wire_ratio", w_f, "x bytes changed", "<= 2.0", digits=2),
            ratio_row(f"{key}_time_vs_rsync", t_f, t_r, "<= 1.0"),
            median_row(f"{key}_wire_ratio_rsync", w_r, "x bytes changed", digits=2)]


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main() -> int:
    ap = bench_parser(__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=None, help="MiB of data (default 200; 24 with --quick)")
    args = ap.parse_args()
    check_samples(ap, args)
    size = args.size or (24 if args.quick else 200)
    n = 1 if args.quick else args.samples
    fan = 2 if args.quick else 8
    with json_stdout(args.json) as out:
        rows = measure(size, n, fan)
        emit(rows, as_json=args.json, out=out)
    return exit_code(rows)


def measure(size: int, n: int, fan: int) -> list[dict]:
    rows = [load_row()]
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-sync-"))
    os.environ["FLEET_HOME"] = str(work / "home")
    machines = Machines()
    try:
        tree = work / "tree"
        files, big = make_tree(tree, size)
        total = sum(p.stat().st_size for p in files)
        say(f"tree: {len(files)} files, {total / 2**20:.0f} MiB; {n} samples per figure; "
            f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} (other work on this machine counts)")
        ours, ref, other = machines.lease(1)[0], machines.lease(1)[0], machines.lease(1)[0]
        sides = Sides(ours, ref, work)

        # first sync, snapshot creation included: fresh store, stat cache and host cache each sample
        t_f, t_r, w_f, w_r, t_c = [], [], [], [], []
        for i in range(n):
            a, b, c, d = sides.pair(tree, f"first{i}", work / f"home-first-{i}")
            t_f.append(a)
            w_f.append(b / total)
            t_r.append(c)
            w_r.append(d / total)
            t_c.append(overlap_ceiling(sides, tree, work, i))
        # throughput ratio: rsync's time over fleet's, per pair and of the medians
        rows.append(ratio_row("first_sync_vs_rsync", t_r, t_f, ">= 1.0"))
        rows[-1]["unit"] = "x rsync throughput"
        rows.append(median_row("first_sync_wire_fleet", w_f, "x data"))
        rows.append(median_row("first_sync_wire_rsync", w_r, "x data"))
        say(f"first sync: fleet {med(t_f):.2f}s ({spread(t_f)}), rsync {med(t_r):.2f}s ({spread(t_r)}); "
            f"wire fleet {med(w_f):.3f}x, rsync {med(w_r):.3f}x of the data")
        rows.append(ratio_row("first_sync_overlap_ceiling_vs_rsync", t_r, t_c, None))
        rows[-1]["unit"] = "x rsync throughput"
        say(f"first sync, creation overlapped perfectly with sending (a ceiling, not fleet): {med(t_c):.2f}s "
            f"({spread(t_c)})")
        rows.append(first_sync_floor(sides.ref, tree, work, sides.kh, n))   # past the proxy: its count is for pairs

        # no-op re-sync: the last sample's home (its stat cache, store, host cache) and destination
        home, dest = work / f"home-first-{n - 1}", f"first{n - 1}"
        t_f, t_r = [], []
        for _ in range(n):
            a, _b, c, _d = sides.pair(tree, dest, home)
            t_f.append(a)
            t_r.append(c)
        rows.append(ratio_row("noop_resync_vs_rsync", t_f, t_r, "<= 1.0"))
        say(f"no-op: fleet {med(t_f):.3f}s ({spread(t_f)}), rsync {med(t_r):.3f}s ({spread(t_r)})")

        # 1 % of the files rewritten (same size, new bytes), a different 1 % each sample
        rng = random.Random(9)
        small = [p for p in files if p.parent.parent.name == "small"]

        def rewrite_files() -> int:
            changed = 0
            for p in rng.sample(files, max(1, len(files) // 100)):
                if p == big:
                    p = rng.choice(small)
                size = p.stat().st_size
                p.write_bytes(rng.randbytes(size))
                changed += size
            return changed
        rows += measure_change(sides, tree, dest, home, n, rewrite_files, "1% files", "files_1pct")

        # 2 MiB rewritten inside the 30 MiB file
        span = min(2 * 2 ** 20, big.stat().st_size // 4)

        def rewrite_inside() -> int:
            with open(big, "r+b") as f:
                f.seek(rng.randrange(0, big.stat().st_size - span))
                f.write(rng.randbytes(span))
            return span
        rows += measure_change(sides, tree, dest, home, n, rewrite_inside,
                               f"{span / 2**20:.1f} MiB inside {big.stat().st_size / 2**20:.0f} MiB", "inside_file")

        # second run on the same host: a new machine, the same home (host cache) and data
        try:
            _dt, result = run_fleet([other], tree, "second", home)
            rows.append(row("second_run_chunk_bytes", result["chunk_bytes"], "bytes", "== 0"))
        except SystemExit as exc:
            rows.append(failed_row("second_run_chunk_bytes", "bytes", str(exc), "== 0"))

        # fan-out: sync time (snapshot already made) to 1 machine vs `fan`, fresh host cache each sample
        one, many = machines.lease(1), machines.lease(fan)
        t1, tn = [], []
        for i in range(n):
            h1, hn = work / f"home-fan1-{i}", work / f"home-fan{fan}-{i}"
            for h in (h1, hn):
                shutil.copytree(home / "store", h / "store", copy_function=os.link)   # measure the sync only
            t1.append(run_fleet(one, tree, f"fan{i}", h1)[1]["sync_s"])
            tn.append(run_fleet(many, tree, f"fan{i}", hn)[1]["sync_s"])
        rows.append(ratio_row(f"fanout_{fan}_vs_1", tn, t1, "<= 4.0"))
        say(f"fan-out: 1 machine {med(t1):.2f}s ({spread(t1)}), {fan} machines {med(tn):.2f}s ({spread(tn)}) "
            "(all on this host: they share one host cache)")
        rows += fanout_hosts(many, tree, home, work, n, t1, total)
        rows.append(load_row("at the end"))
    finally:
        machines.close()
        shutil.rmtree(work, ignore_errors=True)
    return rows


if __name__ == "__main__":
    sys.exit(main())
