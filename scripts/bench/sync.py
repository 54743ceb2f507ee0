"""Benchmark: snapshot sync onto local sshd machines versus `rsync -a` over the same sshd, in one run.

Figures (each with its target; a missed target is reported as missed):
  first_sync_speedup_vs_rsync  rsync time / our sync time, 200 MiB mixed tree, fresh machine   (≥ 1.0)
  noop_resync_ratio_vs_rsync   our no-op re-sync time / rsync's no-op time                      (≤ 1.0)
  changed_1pct_sent_ratio      chunk bytes sent / bytes of the changed files (1 % of files)      (≤ 2.0)
  fanout_8_vs_1                time to sync one snapshot to 8 fresh machines / to 1             (≤ 5.0)
  store_two_overlapping_ratio  store bytes holding two 90 %-overlapping snapshots / holding one (≤ 1.15)
Snapshot creation (chunking into the local store) is timed and printed separately: it happens once
per data version, on the controller, before any machine exists.

Usage: python scripts/bench/sync.py [--json] [--size-mib 200]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def make_tree(root: Path, size_mib: int, seed: int = 1) -> list[Path]:
    """~25 % of the bytes in many small files (1-48 KiB), the rest in a few large ones."""
    rng = random.Random(seed)
    files = []
    small_budget = size_mib * 1024 * 1024 // 4
    i = 0
    while small_budget > 0:
        n = rng.randint(1024, 48 * 1024)
        p = root / f"small/d{i % 40:02d}/f{i:05d}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rng.randbytes(n))
        files.append(p)
        small_budget -= n
        i += 1
    large = size_mib * 1024 * 1024 * 3 // 4
    for j in range(6):
        p = root / f"large/L{j}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rng.randbytes(large // 6))
        files.append(p)
    return files


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class Machines:
    def __init__(self):
        from fleet.ids import new_lease_id
        from fleet.plan import make_plan
        from fleet.providers.local import LocalProvider
        self.provider = LocalProvider()
        self._plan = lambda n: make_plan(provider="local", template=self.provider.template("local-1gpu"), gpus=n,
                                         max_duration_s=1800, heartbeat_ttl_s=1800, project="bench", user="bench")
        self._new_id = new_lease_id
        self.leases = []

    def lease(self, n: int):
        lease = self.provider.lease(self._plan(n), self._new_id(), 1800)
        self.leases.append(lease)
        from fleet.remote.ssh import wait_ready
        for m in lease.machines:
            wait_ready(m, timeout=60).close()
        return lease

    def close(self):
        for lease in self.leases:
            try:
                self.provider.release(lease)
            except Exception as exc:  # noqa: BLE001
                print(f"warning: release failed: {exc}", file=sys.stderr)


def rsync(machine, src: Path, dest: str, known_hosts: Path) -> tuple[float, int]:
    known_hosts.write_text(f"[{machine.host}]:{machine.port} {machine.host_key}\n")
    ssh = (f"ssh -p {machine.port} -i {machine.key_path} -o UserKnownHostsFile={known_hosts} "
           "-o StrictHostKeyChecking=yes -o BatchMode=yes -o IdentitiesOnly=yes")
    t0 = time.monotonic()
    out = subprocess.run(["rsync", "-a", "--stats", "-e", ssh, f"{src}/", f"{machine.user}@{machine.host}:{dest}/"],
                         capture_output=True, text=True, check=True)
    dt = time.monotonic() - t0
    sent = 0
    for line in out.stdout.splitlines():
        if line.startswith("Total bytes sent:"):
            sent = int(line.split(":")[1].strip().replace(",", "").split()[0])
    return dt, sent


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--size-mib", type=int, default=200)
    ap.add_argument("--fanout-mib", type=int, default=64)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-sync-"))
    os.environ["FLEET_HOME"] = str(work / "home")
    from fleet.snapshots import create_snapshot, open_store
    from fleet.snapshots.sync import Target, data_dir, sync_lease, sync_machine
    figures, notes = [], []

    def fig(name, value, unit, target, met):
        figures.append({"figure": name, "value": round(value, 3), "unit": unit, "target": target, "met": bool(met)})

    machines = Machines()
    try:
        tree = work / "tree"
        files = make_tree(tree, args.size_mib)
        total = dir_bytes(tree)
        store = open_store(None)
        t0 = time.monotonic()
        snap = create_snapshot(tree, store, use_cache=False)
        t_create = time.monotonic() - t0
        notes.append(f"tree: {len(files)} files, {total / 2**20:.0f} MiB; snapshot create {t_create:.2f}s "
                     f"({total / t_create / 2**20:.0f} MiB/s chunking+hashing+storing)")
        (ours_m, ref_m) = machines.lease(2).machines
        dest = data_dir(ours_m, "tree")
        target = [Target(dest, [snap.id], read_only=True)]
        t0 = time.monotonic()
        s1 = sync_machine(ours_m, store, target, {snap.id: snap.manifest})
        t_ours = time.monotonic() - t0
        t_rsync, _ = rsync(ref_m, tree, f"{ref_m.workdir}/tree", work / "kh")
        fig("first_sync_speedup_vs_rsync", t_rsync / t_ours, "x", ">= 1.0", t_rsync / t_ours >= 1.0)
        notes.append(f"first sync: ours {t_ours:.2f}s ({s1.bytes_sent / t_ours / 2**20:.0f} MiB/s), rsync {t_rsync:.2f}s")

        t0 = time.monotonic()
        s2 = sync_machine(ours_m, store, target, {snap.id: snap.manifest})
        t_noop = time.monotonic() - t0
        t_rsync_noop, _ = rsync(ref_m, tree, f"{ref_m.workdir}/tree", work / "kh")
        fig("noop_resync_ratio_vs_rsync", t_noop / t_rsync_noop, "x", "<= 1.0", t_noop / t_rsync_noop <= 1.0)
        notes.append(f"no-op: ours {t_noop:.3f}s ({s2.wire_bytes} bytes on the wire), rsync {t_rsync_noop:.3f}s")

        rng = random.Random(9)
        changed = rng.sample(files, max(1, len(files) // 100))
        changed_bytes = 0
        for p in changed:   # rewrite each changed file completely (new content, same size)
            n = p.stat().st_size
            p.write_bytes(rng.randbytes(n))
            changed_bytes += n
        snap2 = create_snapshot(tree, store, use_cache=False)
        s3 = sync_machine(ours_m, store, [Target(dest, [snap2.id], read_only=True)], {snap2.id: snap2.manifest})
        _t, rsync_sent = rsync(ref_m, tree, f"{ref_m.workdir}/tree", work / "kh")
        ratio = s3.bytes_sent / changed_bytes
        fig("changed_1pct_sent_ratio", ratio, "x", "<= 2.0", ratio <= 2.0)
        notes.append(f"1% change: {len(changed)} files, {changed_bytes} bytes changed; ours sent {s3.bytes_sent} "
                     f"chunk bytes ({s3.wire_bytes} on the wire), rsync sent {rsync_sent}")

        fan_tree = work / "fan"
        make_tree(fan_tree, args.fanout_mib, seed=3)
        fan = create_snapshot(fan_tree, store, use_cache=False)
        one = machines.lease(1)
        t0 = time.monotonic()
        sync_lease(one.machines, store, lambda m: [Target(data_dir(m, "fan"), [fan.id], read_only=True)])
        t_one = time.monotonic() - t0
        eight = machines.lease(8)
        t0 = time.monotonic()
        sync_lease(eight.machines, store, lambda m: [Target(data_dir(m, "fan"), [fan.id], read_only=True)])
        t_eight = time.monotonic() - t0
        fig("fanout_8_vs_1", t_eight / t_one, "x", "<= 5.0", t_eight / t_one <= 5.0)
        notes.append(f"fan-out of {args.fanout_mib} MiB: 1 machine {t_one:.2f}s, 8 machines {t_eight:.2f}s "
                     f"({os.cpu_count()} CPU cores shared by controller and all sshds)")

        one_store = open_store(str(work / "store-one"))
        two_store = open_store(str(work / "store-two"))
        base = work / "ov"
        ov_files = make_tree(base, max(20, args.size_mib // 2), seed=5)
        create_snapshot(base, one_store, use_cache=False)
        create_snapshot(base, two_store, use_cache=False)
        rng = random.Random(6)
        budget = dir_bytes(base) // 10         # replace (up to) 10 % of the bytes, file by file
        replaced = 0
        for p in rng.sample(ov_files, len(ov_files)):
            n = p.stat().st_size
            if n > budget - replaced:
                continue
            p.write_bytes(rng.randbytes(n))
            replaced += n
        notes.append(f"overlap: replaced {replaced / dir_bytes(base):.1%} of the bytes")
        create_snapshot(base, two_store, use_cache=False)
        size_one = dir_bytes(work / "store-one")
        size_two = dir_bytes(work / "store-two")
        fig("store_two_overlapping_ratio", size_two / size_one, "x", "<= 1.15", size_two / size_one <= 1.15)
        notes.append(f"store: one snapshot {size_one} bytes, two 90%-overlapping {size_two} bytes")
    finally:
        machines.close()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        for n in notes:
            print(n)
        for f in figures:
            print(f"{f['figure']:32} {f['value']:>8} {f['unit']}  target {f['target']:8} "
                  f"{'met' if f['met'] else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
