"""The per-host chunk cache outlives leases and is safe to fill from two leases at once; a no-op
re-sync is one small round trip; a changed tree is rebuilt incrementally (unchanged files linked)."""
from __future__ import annotations

import os
import random
import threading

from fleet.snapshots import create_snapshot, open_store
from fleet.snapshots.sync import Target, sync_lease, sync_machine
from fleet.snapshots.sync_remote import chunk_cache, data_dir


def _tree(root, seed, files=12, size=200_000):
    rng = random.Random(seed)
    root.mkdir(parents=True)
    for i in range(files):
        (root / f"f{i:02d}.bin").write_bytes(rng.randbytes(size + i))
    return root


def _same(dest, src):
    return sorted(os.listdir(dest)) == sorted(os.listdir(src)) and all(
        open(os.path.join(dest, n), "rb").read() == (src / n).read_bytes() for n in os.listdir(src))


def test_two_leases_fill_one_host_cache_at_once_then_a_third_gets_nothing(fleet_home, local_lease, tmp_path):
    store = open_store(None)
    src = _tree(tmp_path / "d", 1)
    snap = create_snapshot(src, store)
    a, b = local_lease(gpus=1).machines[0], local_lease(gpus=1).machines[0]
    results, errors = {}, []

    def go(m):
        try:
            results[m.id] = sync_machine(m, store, [Target(data_dir(m, "d"), [snap.id], read_only=True)])
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
    threads = [threading.Thread(target=go, args=(m,)) for m in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    assert _same(data_dir(a, "d"), src) and _same(data_dir(b, "d"), src)
    cache = chunk_cache(a)
    assert cache == chunk_cache(b) and not cache.startswith(a.workdir)          # outside every lease
    names = [f for _d, _s, fs in os.walk(cache) for f in fs]
    assert not [f for f in names if ".tmp" in f]                                 # no partial entries left
    # a third lease on the same host (the other two still hold their trees, or not): nothing to send
    c = local_lease(gpus=1).machines[0]
    third = sync_machine(c, store, [Target(data_dir(c, "d"), [snap.id], read_only=True)])
    assert third.bytes_sent == 0 and third.manifest_bytes == 0 and not third.helper_sent
    assert _same(data_dir(c, "d"), src)


def test_noop_is_one_small_round_trip_and_changes_are_incremental(fleet_home, local_lease, tmp_path):
    store = open_store(None)
    src = _tree(tmp_path / "d", 2, files=40, size=50_000)
    v1 = create_snapshot(src, store)
    (m,) = local_lease(gpus=1).machines
    dest = data_dir(m, "d")
    first = sync_machine(m, store, [Target(dest, [v1.id], read_only=True)])
    assert first.bytes_sent > 0 and first.manifest_bytes < len(v1.manifest.canonical_bytes())   # compressed
    noop = sync_machine(m, store, [Target(dest, [v1.id], read_only=True)])
    assert noop.targets_current == [dest] and noop.bytes_sent == 0 and noop.manifest_bytes == 0
    assert noop.wire_bytes < 1024                     # the request: ids and paths, never the manifest
    inode = os.stat(f"{dest}/f00.bin").st_ino
    (src / "f07.bin").write_bytes(b"changed\n")
    v2 = create_snapshot(src, store)
    second = sync_machine(m, store, [Target(dest, [v2.id], read_only=True)])
    assert second.bytes_sent == 8 and second.files_reused == 39
    assert os.stat(f"{dest}/f00.bin").st_ino == inode and open(f"{dest}/f07.bin").read() == "changed\n"
    # a file changed on the machine behind fleet's back is not trusted: it is rebuilt, not linked
    os.chmod(f"{dest}/f01.bin", 0o644)
    with open(f"{dest}/f01.bin", "r+b") as f:
        f.write(b"X")
    again = sync_machine(m, store, [Target(dest, [v2.id], read_only=True)])
    assert again.targets_current == [] and _same(dest, src)


def test_fanout_on_one_host_sends_each_chunk_once(fleet_home, local_lease, tmp_path):
    store = open_store(None)
    src = _tree(tmp_path / "d", 3)
    snap = create_snapshot(src, store)
    lease = local_lease(gpus=4)
    stats = sync_lease(lease.machines, store, lambda m: [Target(data_dir(m, "d"), [snap.id], read_only=True)])
    assert sum(s.bytes_sent for s in stats) == snap.manifest.unique_chunk_bytes()
    assert all(_same(data_dir(m, "d"), src) for m in lease.machines)


def _order(lease, store, snap, name):
    events = []
    stats = sync_lease(lease.machines, store, lambda m: [Target(data_dir(m, name), [snap.id], read_only=True)],
                       on_state=lambda mid, st: events.append(st))
    return events, stats


def test_a_warm_host_cache_feeds_its_machines_at_once_and_a_stale_hint_costs_only_bytes(fleet_home, local_lease,
                                                                                       tmp_path):
    import shutil
    from fleet.snapshots import host_hints
    store = open_store(None)
    src = _tree(tmp_path / "d", 4)
    snap = create_snapshot(src, store)
    # Cold cache: the first machine alone fills it, then the rest copy from it.
    first = local_lease(gpus=3)
    events, stats = _order(first, store, snap, "d")
    assert events[:2] == ["syncing", "done"], events
    assert sum(s.bytes_sent for s in stats) == snap.manifest.unique_chunk_bytes()
    # The next lease on this host: every machine at once, nothing sent.
    second = local_lease(gpus=3)
    events, stats = _order(second, store, snap, "d")
    assert events[:3] == ["syncing"] * 3, events
    assert sum(s.bytes_sent for s in stats) == 0
    assert all(_same(data_dir(m, "d"), src) for m in second.machines)
    # The cache removed behind fleet's back: the hint is wrong, the trees still right.
    shutil.rmtree(chunk_cache(second.machines[0]))
    third = local_lease(gpus=3)
    events, stats = _order(third, store, snap, "d")
    assert events[:3] == ["syncing"] * 3, events
    assert sum(s.bytes_sent for s in stats) >= snap.manifest.unique_chunk_bytes()
    assert all(_same(data_dir(m, "d"), src) for m in third.machines)
    # A hints file someone broke is no hint at all, and is written afresh.
    host_hints._path().write_text("{not json")
    assert not host_hints.holds_all("x", {snap.id})
    host_hints.remember("x", {snap.id})
    assert host_hints.holds_all("x", {snap.id})


def test_a_host_cache_with_many_manifests_stays_under_cache_max(fleet_home, local_lease, tmp_path):
    """Manifests count toward cache_max and are evicted with the chunks; one the host no longer holds
    is simply sent again, and a tree whose old snapshot's manifest is gone is rebuilt whole."""
    store = open_store(None)
    (m,) = local_lease(gpus=1).machines
    cap = 64 * 1024
    snaps = []
    for i in range(12):                # the same small files under new names: a new fat manifest each
        src = tmp_path / f"s{i}"
        src.mkdir()
        for j in range(300):
            (src / f"v{i}-{j:03d}.txt").write_text(f"{j}\n")
        snaps.append((src, create_snapshot(src, store)))
    dest = data_dir(m, "d")
    first = sync_machine(m, store, [Target(dest, [snaps[0][1].id], read_only=True)], cache_max=str(cap))
    assert first.manifest_bytes > 8 * 1024
    for i, (src, snap) in enumerate(snaps[1:], 1):
        sync_machine(m, store, [Target(data_dir(m, f"o{i}"), [snap.id], read_only=True)], cache_max=str(cap))
    cache = chunk_cache(m)
    manifests = os.listdir(f"{cache}/manifests")
    held = sum(os.path.getsize(os.path.join(d, f)) for d, _s, fs in os.walk(cache) for f in fs
               if len(f) == 64 or f.endswith(".z"))
    assert held <= cap and 0 < len(manifests) < len(snaps)
    assert f"{snaps[0][1].id}.z" not in manifests and f"{snaps[-1][1].id}.z" in manifests
    # dest holds snaps[0], whose manifest the host dropped (so no delta base and no old view to patch
    # from): the next snapshot's whole manifest crosses, and the tree is built right.
    again = sync_machine(m, store, [Target(dest, [snaps[1][1].id], read_only=True)], cache_max=str(cap))
    assert again.manifest_bytes > 8 * 1024 and again.targets_written == [dest]
    assert _same(dest, snaps[1][0])


def test_the_helpers_the_host_keeps_count_toward_cache_max_and_old_ones_are_evicted(fleet_home, local_lease,
                                                                                    tmp_path):
    """helper/ holds the sync helper of every fleet version that synced to the host (source and
    compiled code): they count toward cache_max, an earlier version's go with the LRU, and the
    running one's stay (the next sync finds it and is not sent it)."""
    from fleet.snapshots.sync_remote import helper_hash
    store = open_store(None)
    (m,) = local_lease(gpus=1).machines
    cache = chunk_cache(m)
    os.makedirs(f"{cache}/helper", mode=0o700)
    os.chmod(cache, 0o700)
    older = "ab" * 32                                       # an earlier fleet's helper, kept by its syncs
    for name in (f"{older}.py", f"{older}.py.cpython-311.code"):
        with open(f"{cache}/helper/{name}", "wb") as f:
            f.write(os.urandom(200_000))
        os.utime(f"{cache}/helper/{name}", (1_000_000_000, 1_000_000_000))
    cap = 512 * 1024
    src = _tree(tmp_path / "d", 5, files=3, size=100_000)
    snap = create_snapshot(src, store)
    sync_machine(m, store, [Target(data_dir(m, "one"), [snap.id], read_only=True)], cache_max=str(cap))
    held = sum(os.path.getsize(os.path.join(d, f)) for d, _s, fs in os.walk(cache) for f in fs
               if d.endswith("/helper") or len(f) == 64 or f.endswith(".z"))
    assert held <= cap
    kept = os.listdir(f"{cache}/helper")
    assert not [n for n in kept if n.startswith(older)] and f"{helper_hash()}.py" in kept
    again = sync_machine(m, store, [Target(data_dir(m, "two"), [snap.id], read_only=True)], cache_max=str(cap))
    assert not again.helper_sent and _same(data_dir(m, "two"), src)
