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
  second_run_chunk_bytes    chunk bytes a new lease on the same host receives for the same data (== 0)
  rsync_* wire figures are informative (met null).

Usage: python scripts/bench/sync.py [--json] [--size 200] [--samples 5]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


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


class Proxy:
    """A counting TCP relay 127.0.0.1:port → 127.0.0.1:target (bytes both ways, all connections)."""

    def __init__(self, target: int):
        self.target, self.count, self.lock = target, 0, threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def take(self) -> int:
        with self.lock:
            n, self.count = self.count, 0
        return n

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        buf = bytearray(1 << 20)
        try:
            while True:
                n = a.recv_into(buf)
                if not n:
                    break
                b.sendall(memoryview(buf)[:n])
                with self.lock:
                    self.count += n
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pipe, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client), daemon=True).start()


# -- fleet's side, as its own process ------------------------------------------------------------------
def fleet_side(spec: dict) -> None:
    from fleet.models import Machine
    from fleet.snapshots import create_snapshot, open_store
    from fleet.snapshots.sync import Target, sync_lease
    t0 = time.monotonic()
    store = open_store(None)
    snap = create_snapshot(spec["tree"], store)
    t1 = time.monotonic()
    machines = [Machine.from_dict(m) for m in spec["machines"]]
    stats = sync_lease(machines, store, lambda m: [Target(f"{m.workdir}/data/{spec['dest']}", [snap.id],
                                                          read_only=True)])
    print(json.dumps({"snapshot_s": t1 - t0, "sync_s": time.monotonic() - t1,
                      "chunk_bytes": sum(s.bytes_sent for s in stats), "id": snap.id}))


def run_fleet(machines, tree: Path, dest: str, home: Path) -> tuple[float, dict]:
    from fleet.models import to_jsonable
    spec = json.dumps({"machines": [to_jsonable(m) for m in machines], "tree": str(tree), "dest": dest})
    env = {**os.environ, "FLEET_HOME": str(home)}
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, __file__, "--fleet-side", spec], env=env, capture_output=True, text=True)
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
                   capture_output=True, text=True, check=True)
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


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float]) -> str:
    return f"{min(xs):.3g}–{max(xs):.3g}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--size", type=int, default=200, help="MiB of data (default 200)")
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument("--fleet-side")
    args = ap.parse_args()
    if args.fleet_side:
        fleet_side(json.loads(args.fleet_side))
        return 0
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-sync-"))
    os.environ["FLEET_HOME"] = str(work / "home")
    figures, notes = [], []
    say = (lambda s: print(s, file=sys.stderr, flush=True)) if args.json else (lambda s: print(s, flush=True))

    def fig(name, value, unit, target, met):
        figures.append({"figure": name, "value": round(value, 3), "unit": unit, "target": target,
                        "met": None if met is None else bool(met)})

    machines = Machines()
    try:
        tree = work / "tree"
        files, big = make_tree(tree, args.size)
        total = sum(p.stat().st_size for p in files)
        say(f"tree: {len(files)} files, {total / 2**20:.0f} MiB; {args.samples} samples per figure; "
            f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} (other work on this machine counts)")
        ours, ref, other = machines.lease(1)[0], machines.lease(1)[0], machines.lease(1)[0]
        p_ours, p_ref = Proxy(ours.port), Proxy(ref.port)
        ours_p, ref_p = replace(ours, port=p_ours.port), replace(ref, port=p_ref.port)
        kh = work / "kh"
        n = args.samples

        # first sync, snapshot creation included: fresh store, stat cache and host cache each sample
        t_f, t_r, w_f, w_r = [], [], [], []
        for i in range(n):
            home = work / f"home-first-{i}"
            dt, out = run_fleet([ours_p], tree, f"first{i}", home)
            t_f.append(dt)
            w_f.append(p_ours.take())
            t_r.append(run_rsync(ref_p, tree, f"{ref.workdir}/first{i}", kh))
            w_r.append(p_ref.take())
        r = [b / a for a, b in zip(t_f, t_r)]
        fig("first_sync_vs_rsync", med(r), "x rsync throughput", ">= 1.0", med(r) >= 1.0)
        say(f"first sync: fleet {med(t_f):.2f}s ({spread(t_f)}), rsync {med(t_r):.2f}s ({spread(t_r)}); "
            f"wire fleet {med(w_f) / 2**20:.1f} MiB, rsync {med(w_r) / 2**20:.1f} MiB")
        fig("first_sync_wire_fleet", med(w_f) / total, "x data", "informative", None)

        # no-op re-sync: the last sample's home (its stat cache, store, host cache) and destination
        home = work / f"home-first-{n - 1}"
        dest_f, dest_r = f"first{n - 1}", f"{ref.workdir}/first{n - 1}"
        t_f, t_r = [], []
        for _ in range(n):
            t_f.append(run_fleet([ours_p], tree, dest_f, home)[0])
            p_ours.take()
            t_r.append(run_rsync(ref_p, tree, dest_r, kh))
            p_ref.take()
        fig("noop_resync_vs_rsync", med(t_f) / med(t_r), "x rsync time", "<= 1.0", med(t_f) / med(t_r) <= 1.0)
        say(f"no-op: fleet {med(t_f):.3f}s ({spread(t_f)}), rsync {med(t_r):.3f}s ({spread(t_r)})")

        # 1 % of the files rewritten (same size, new bytes), a different 1 % each sample
        rng = random.Random(9)
        small = [p for p in files if p.parent.parent.name == "small"]
        t_f, t_r, w_f, w_r, ch = [], [], [], [], []
        for _ in range(n):
            changed = 0
            for p in rng.sample(files, max(1, len(files) // 100)):
                if p == big:
                    p = rng.choice(small)
                size = p.stat().st_size
                p.write_bytes(rng.randbytes(size))
                changed += size
            ch.append(changed)
            dt, _out = run_fleet([ours_p], tree, dest_f, home)
            t_f.append(dt)
            w_f.append(p_ours.take() / changed)
            t_r.append(run_rsync(ref_p, tree, dest_r, kh))
            w_r.append(p_ref.take() / changed)
        fig("files_1pct_wire_ratio", med(w_f), "x bytes changed", "<= 2.0", med(w_f) <= 2.0)
        fig("files_1pct_time_vs_rsync", med(t_f) / med(t_r), "x rsync time", "<= 1.0", med(t_f) / med(t_r) <= 1.0)
        fig("files_1pct_wire_ratio_rsync", med(w_r), "x bytes changed", "informative", None)
        say(f"1% files ({med(ch) / 2**20:.2f} MiB): fleet {med(t_f):.3f}s ({spread(t_f)}) wire {med(w_f):.2f}x "
            f"({spread(w_f)}); rsync {med(t_r):.3f}s ({spread(t_r)}) wire {med(w_r):.2f}x")

        # 2 MiB rewritten inside the 30 MiB file
        t_f, t_r, w_f, w_r = [], [], [], []
        changed = min(2 * 2 ** 20, big.stat().st_size // 4)
        for _ in range(n):
            with open(big, "r+b") as f:
                f.seek(rng.randrange(0, big.stat().st_size - changed))
                f.write(rng.randbytes(changed))
            dt, _out = run_fleet([ours_p], tree, dest_f, home)
            t_f.append(dt)
            w_f.append(p_ours.take() / changed)
            t_r.append(run_rsync(ref_p, tree, dest_r, kh))
            w_r.append(p_ref.take() / changed)
        fig("inside_file_wire_ratio", med(w_f), "x bytes changed", "<= 2.0", med(w_f) <= 2.0)
        fig("inside_file_time_vs_rsync", med(t_f) / med(t_r), "x rsync time", "<= 1.0", med(t_f) / med(t_r) <= 1.0)
        fig("inside_file_wire_ratio_rsync", med(w_r), "x bytes changed", "informative", None)
        say(f"{changed / 2**20:.0f} MiB inside {big.stat().st_size / 2**20:.0f} MiB: fleet {med(t_f):.3f}s "
            f"({spread(t_f)}) wire {med(w_f):.2f}x ({spread(w_f)}); rsync {med(t_r):.3f}s wire {med(w_r):.2f}x")

        # second run on the same host: a new machine, the same home (host cache) and data
        _dt, out = run_fleet([other], tree, "second", home)
        fig("second_run_chunk_bytes", out["chunk_bytes"], "bytes", "== 0", out["chunk_bytes"] == 0)

        # fan-out: sync time (snapshot already made) to 1 machine vs 8, fresh host cache each sample
        one, eight = machines.lease(1), machines.lease(8)
        t1, t8 = [], []
        for i in range(n):
            h1, h8 = work / f"home-fan1-{i}", work / f"home-fan8-{i}"
            for h in (h1, h8):
                shutil.copytree(home / "store", h / "store", copy_function=os.link)   # measure the sync only
            t1.append(run_fleet(one, tree, f"fan{i}", h1)[1]["sync_s"])
            t8.append(run_fleet(eight, tree, f"fan{i}", h8)[1]["sync_s"])
        fig("fanout_8_vs_1", med(t8) / med(t1), "x one machine", "<= 4.0", med(t8) / med(t1) <= 4.0)
        say(f"fan-out: 1 machine {med(t1):.2f}s ({spread(t1)}), 8 machines {med(t8):.2f}s ({spread(t8)}) "
            "(all on this host: they share one host cache)")
    finally:
        machines.close()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(figures))
    else:
        for f in figures:
            met = {True: "met", False: "MISSED", None: "-"}[f["met"]]
            print(f"{f['figure']:30} {f['value']:>10} {f['unit']:18} target {f['target']:12} {met}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
