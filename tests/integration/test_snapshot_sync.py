"""Sync onto real local sshd machines: only missing chunks travel, files verified, read-only, atomic."""
from __future__ import annotations

import os
import random

import pytest

from fleet.errors import IntegrityError, UsageError
from fleet.snapshots import create_snapshot, open_store
from fleet.snapshots.sync import Target, sync_lease, sync_machine
from fleet.snapshots.sync_remote import chunk_cache, data_dir
from fleet.snapshots.catalog import load


@pytest.fixture
def data_tree(tmp_path):
    rng = random.Random(5)
    root = tmp_path / "train"
    (root / "shards").mkdir(parents=True)
    for i in range(30):
        (root / "shards" / f"s{i:02d}.csv").write_text("".join(f"{rng.random():.6f}\n" for _ in range(200)))
    (root / "weights.bin").write_bytes(rng.randbytes(3 * 1024 * 1024))
    return root


def test_sync_sends_only_missing_and_verifies(fleet_home, local_lease, data_tree):
    store = open_store(None)
    first = create_snapshot(data_tree, store)
    lease = local_lease(gpus=2)
    targets = lambda m: [Target(data_dir(m, "train"), [first.id], read_only=True)]   # noqa: E731
    stats = sync_lease(lease.machines, store, targets)
    total = first.manifest.unique_chunk_bytes()
    # both machines are on this host: the first seeds the host's chunk cache, the second links from it
    assert [s.bytes_sent for s in stats] == [total, 0]
    for m in lease.machines:
        dest = data_dir(m, "train")
        assert open(f"{dest}/weights.bin", "rb").read() == (data_tree / "weights.bin").read_bytes()
        assert not os.access(f"{dest}/weights.bin", os.W_OK) or os.geteuid() == 0
        assert not os.stat(f"{dest}/weights.bin").st_mode & 0o222
    # same snapshot again: nothing but the question crosses
    again = sync_lease(lease.machines, store, targets)
    assert [s.bytes_sent for s in again] == [0, 0]
    assert all(s.targets_current == [data_dir(m, "train")] for s, m in zip(again, lease.machines))
    # the question is about the size of the manifest, never of the data
    assert all(s.wire_bytes < 2 * len(first.manifest.canonical_bytes()) for s in again)
    # change one shard: only its chunk is sent
    (data_tree / "shards" / "s07.csv").write_text("changed\n")
    second = create_snapshot(data_tree, store)
    stats = sync_lease(lease.machines, store,
                       lambda m: [Target(data_dir(m, "train"), [second.id], read_only=True)])
    assert [s.bytes_sent for s in stats] == [8, 0]
    assert open(f"{data_dir(lease.machines[1], 'train')}/shards/s07.csv").read() == "changed\n"


def test_code_with_overlay_and_corrupt_cache(fleet_home, local_lease, tmp_path):
    store = open_store(None)
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text("print('committed')\n")
    (code / "old.py").write_text("x\n")
    base = create_snapshot(code, store).id
    from fleet.snapshots.create import SnapshotBuilder
    b = SnapshotBuilder(store)
    import io
    b.add_stream("train.py", 0o644, io.BytesIO(b"print('dirty')\n"))
    b.deleted.append("old.py")
    overlay = b.publish().id
    (m,) = local_lease(gpus=1).machines
    dest = f"{m.workdir}/work"
    sync_machine(m, store, [Target(dest, [base, overlay])], {base: load(store, base), overlay: load(store, overlay)})
    assert open(f"{dest}/train.py").read() == "print('dirty')\n"
    assert not os.path.exists(f"{dest}/old.py")
    # A corrupt entry in the machine's cache is caught on materialise and dropped; the sync tries
    # once more on a fresh channel, which sends the chunk, and succeeds (saying what was dropped).
    other = tmp_path / "other"
    other.mkdir()
    (other / "train.py").write_text("print('v3')\n")
    v3 = create_snapshot(other, store)
    h = v3.manifest.files()[0].chunks[0][0]
    entry = f"{chunk_cache(m)}/{h[:2]}/{h}"
    os.makedirs(os.path.dirname(entry), exist_ok=True)
    with open(entry, "wb") as f:
        f.write(b"tampered")
    again = sync_machine(m, store, [Target(dest, [v3.id])], {v3.id: v3.manifest})
    assert again.cache_dropped == f"train.py (chunk {h[:12]})"
    assert again.chunks_sent == 1 and again.targets_written == [dest] and again.targets_current == []
    assert open(f"{dest}/train.py").read() == "print('v3')\n"
    assert open(entry, "rb").read() == b"print('v3')\n"                 # the damaged entry, replaced by a good one
    assert sync_machine(m, store, [Target(dest, [v3.id])], {v3.id: v3.manifest}).cache_dropped is None


def test_missing_chunk_in_store_refuses_before_sending(fleet_home, local_lease, data_tree):
    store = open_store(None)
    snap = create_snapshot(data_tree, store)
    h = next(e for e in snap.manifest.files() if e.path == "weights.bin").chunks[0][0]
    store.delete_chunk(h)
    (m,) = local_lease(gpus=1).machines
    with pytest.raises(IntegrityError, match=f"chunk {h[:12]} of weights.bin is missing"):
        sync_machine(m, store, [Target(data_dir(m, "train"), [snap.id], read_only=True)], {snap.id: snap.manifest})
    assert not os.path.exists(data_dir(m, "train"))


def test_repeated_chunks_links_and_appends(fleet_home, local_lease, tmp_path):
    """Chunks repeated inside a file and across files travel once; an unchanged file of a new snapshot
    is linked from the machine's cache (same inode, nothing sent); appending to a big file sends only
    its new tail chunks, the rest come from the cached copy of the old version."""
    rng = random.Random(11)
    root = tmp_path / "d"
    root.mkdir()
    big = rng.randbytes(6 * 1024 * 1024)
    (root / "zeros.bin").write_bytes(bytes(12 * 1024 * 1024))      # max-size chunks, all the same
    (root / "big.bin").write_bytes(big)
    (root / "copy-a.txt").write_text("same\n" * 1000)
    (root / "copy-b.txt").write_text("same\n" * 1000)
    (root / "empty").write_bytes(b"")
    store = open_store(None)
    v1 = create_snapshot(root, store)
    (m,) = local_lease(gpus=1).machines
    dest = data_dir(m, "d")
    s1 = sync_machine(m, store, [Target(dest, [v1.id], read_only=True)], {v1.id: v1.manifest})
    assert s1.bytes_sent == v1.manifest.unique_chunk_bytes() < v1.manifest.total_size
    for name in ("zeros.bin", "big.bin", "copy-a.txt", "copy-b.txt", "empty"):
        assert open(f"{dest}/{name}", "rb").read() == (root / name).read_bytes()
    inode = os.stat(f"{dest}/copy-a.txt").st_ino
    (root / "big.bin").write_bytes(big + rng.randbytes(300_000))
    v2 = create_snapshot(root, store)
    s2 = sync_machine(m, store, [Target(dest, [v2.id], read_only=True)], {v2.id: v2.manifest})
    assert 300_000 <= s2.bytes_sent < 5 * 1024 * 1024
    assert open(f"{dest}/big.bin", "rb").read() == (root / "big.bin").read_bytes()
    assert os.stat(f"{dest}/copy-a.txt").st_ino == inode           # linked, not rewritten
    assert not os.stat(f"{dest}/big.bin").st_mode & 0o222


def test_cache_is_bounded(fleet_home, local_lease, tmp_path, monkeypatch):
    """The host cache is evicted least recently used first above FLEET_CHUNK_CACHE_MAX; what the
    sync that trims just used (the live tree's file) is never dropped."""
    store = open_store(None)
    (m,) = local_lease(gpus=1).machines
    dest = data_dir(m, "d")
    rng = random.Random(12)
    monkeypatch.setenv("FLEET_CHUNK_CACHE_MAX", "1M")
    sizes = []
    for i in range(4):
        root = tmp_path / f"v{i}"
        root.mkdir()
        (root / "blob.bin").write_bytes(rng.randbytes(700_000))
        snap = create_snapshot(root, store)
        stats = sync_machine(m, store, [Target(dest, [snap.id], read_only=True)], {snap.id: snap.manifest})
        sizes.append(stats.evicted_bytes)
        assert open(f"{dest}/blob.bin", "rb").read() == (root / "blob.bin").read_bytes()
    cached = [os.path.join(d, f) for d, _, files in os.walk(chunk_cache(m)) for f in files if len(f) == 64]
    assert all(os.stat(p).st_nlink == 1 for p in cached)          # copies: no tree shares an inode
    assert sum(os.stat(p).st_size for p in cached) <= 1024 * 1024
    assert sizes[0] == 0 and sum(sizes) >= 3 * 700_000             # each older version fell out in turn
    live = create_snapshot(tmp_path / "v3", store)
    h = live.manifest.files()[0].sha256                            # cached whole, by file hash
    assert os.path.exists(f"{chunk_cache(m)}/{h[:2]}/{h}")        # the live tree's file is still cached
    monkeypatch.setenv("FLEET_CHUNK_CACHE_MAX", "lots")
    with pytest.raises(UsageError, match="FLEET_CHUNK_CACHE_MAX"):
        sync_machine(m, store, [Target(dest, [live.id], read_only=True)], {live.id: live.manifest})


def test_corrupt_store_chunk_named_not_materialised(fleet_home, local_lease, data_tree):
    """The controller no longer re-hashes what it sends: the machine rejects the bad chunk, and the
    error still names the store's corrupt chunk and its file."""
    store = open_store(None)
    snap = create_snapshot(data_tree, store)
    h = next(e for e in snap.manifest.files() if e.path == "shards/s03.csv").chunks[0][0]
    path = store.chunk_path(h)
    os.chmod(path, 0o644)
    with open(path, "wb") as f:
        f.write(b"bit rot")
    (m,) = local_lease(gpus=1).machines
    with pytest.raises(IntegrityError, match=f"chunk {h[:12]} of shards/s03.csv is corrupt in"):
        sync_machine(m, store, [Target(data_dir(m, "train"), [snap.id], read_only=True)], {snap.id: snap.manifest})
    assert not os.path.exists(data_dir(m, "train"))


def test_channels_dialled_before_the_snapshot_carry_the_sync_and_unused_ones_close(fleet_home, local_lease, data_tree):
    """sync_channel.dial starts the machines' channels first (the SSH handshake overlaps create_snapshot);
    sync_lease uses them, and closes a channel it had no machine for, whose helper exits quietly."""
    from fleet.snapshots.sync_channel import dial
    lease = local_lease(gpus=2)
    first, second = lease.machines
    channels = dial([first, second])
    if not channels:
        pytest.skip("no OpenSSH client here: sync runs over paramiko")
    procs = [ch.proc for ch in channels.values()]
    store = open_store(None)
    snap = create_snapshot(data_tree, store)
    stats = sync_lease([first], store, lambda m: [Target(data_dir(m, "train"), [snap.id], read_only=True)],
                       channels=channels)
    assert channels == {}                                          # the unused one was closed too
    assert stats[0].bytes_sent == snap.manifest.unique_chunk_bytes()
    assert open(f"{data_dir(first, 'train')}/weights.bin", "rb").read() == (data_tree / "weights.bin").read_bytes()
    assert [p.poll() for p in procs] == [0, 0]                     # both ssh processes ended (reaped), cleanly
    assert not os.path.exists(data_dir(second, "train"))


def test_a_noop_resync_leaves_the_host_cache_alone(fleet_home, local_lease, data_tree, monkeypatch):
    """A no-op answers from the machine's records without opening the host cache: nothing is read,
    locked or trimmed there, even when the cap was lowered below what it holds; the next sync that
    adds to the cache trims it."""
    store = open_store(None)
    (m,) = local_lease(gpus=1).machines
    snap = create_snapshot(data_tree, store)
    target = lambda mm: [Target(data_dir(mm, "train"), [snap.id], read_only=True)]   # noqa: E731
    sync_lease([m], store, target)

    def cached() -> list[str]:
        return sorted(f for _d, _s, files in os.walk(chunk_cache(m)) for f in files if len(f) == 64)
    before = cached()
    monkeypatch.setenv("FLEET_CHUNK_CACHE_MAX", "1")
    (again,) = sync_lease([m], store, target)
    assert again.targets_current == [data_dir(m, "train")] and again.evicted_bytes == 0
    assert cached() == before
    (data_tree / "new.txt").write_text("one more file\n")
    changed = create_snapshot(data_tree, store)
    (after,) = sync_lease([m], store, lambda mm: [Target(data_dir(mm, "train"), [changed.id], read_only=True)])
    assert after.evicted_bytes > 0 and len(cached()) < len(before)


def test_a_dialled_channel_that_never_connected_fails_with_ssh_s_reason(fleet_home, local_lease, data_tree):
    """The SSH client of a dialled channel may have given up before the snapshot is ready: the sync
    then fails with what ssh said, not a bare broken pipe."""
    import dataclasses
    import socket
    import time

    from fleet.errors import MachineUnreachable
    from fleet.snapshots.sync_channel import dial
    (m,) = local_lease(gpus=1).machines
    with socket.socket() as s:                       # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gone = dataclasses.replace(m, port=port)
    channels = dial([gone])
    if not channels:
        pytest.skip("no OpenSSH client here: sync runs over paramiko")
    proc = channels[gone.id].proc
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    snap = create_snapshot(data_tree, open_store(None))
    with pytest.raises(MachineUnreachable) as err:
        sync_lease([gone], open_store(None), lambda mm: [Target(data_dir(mm, "train"), [snap.id])],
                   channels=channels)
    assert "refused" in str(err.value).lower() and "Broken pipe" not in str(err.value)
