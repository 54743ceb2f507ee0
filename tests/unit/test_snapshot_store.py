"""Local store: same bytes → same id, names, verify names what is broken, atomic creates, gc."""
from __future__ import annotations

import errno
import os
import random
import time

import pytest

from fleet.errors import EnvironmentProblem, IntegrityError, NotFound, UsageError
from fleet.snapshots import (create_snapshot, diff, gc, list_snapshots, materialise, open_store, resolve, show,
                             verify, verify_or_raise)


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    return open_store(None)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.txt").write_text("alpha\n")
    (root / "b.bin").write_bytes(random.Random(7).randbytes(2 * 1024 * 1024 + 17))
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "run.sh", 0o755)
    (root / "empty").mkdir()
    os.symlink("sub/a.txt", root / "link")
    return root


def test_same_content_same_id_anywhere(store, tree, tmp_path):
    first = create_snapshot(tree, store)
    copy = tmp_path / "copy"
    materialise(store, first.id, copy)
    os.utime(copy / "sub" / "a.txt", (1, 1))        # mtimes are not content
    again = create_snapshot(copy, store, use_cache=False)
    assert again.id == first.id
    assert again.new_chunks == 0


def test_round_trip_preserves_tree(store, tree, tmp_path):
    sid = create_snapshot(tree, store).id
    out = materialise(store, sid, tmp_path / "out", read_only=True)
    assert (out / "sub" / "a.txt").read_text() == "alpha\n"
    assert (out / "b.bin").read_bytes() == (tree / "b.bin").read_bytes()
    assert os.readlink(out / "link") == "sub/a.txt"
    assert (out / "empty").is_dir()
    assert os.stat(out / "run.sh").st_mode & 0o111
    assert not os.stat(out / "b.bin").st_mode & 0o222        # read-only


def test_name_collision_is_an_error_same_content_is_fine(store, tree):
    sid = create_snapshot(tree, store, name="train").id
    assert create_snapshot(tree, store, name="train").id == sid
    (tree / "sub" / "a.txt").write_text("changed\n")
    with pytest.raises(UsageError, match="already points to"):
        create_snapshot(tree, store, name="train")
    assert resolve(store, "train") == sid
    assert resolve(store, sid[:10]) == sid


def test_missing_path_and_bad_name(store, tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        create_snapshot(tmp_path / "nope", store)
    with pytest.raises(UsageError, match="invalid snapshot name"):
        create_snapshot(tmp_path, store, name="../evil")
    with pytest.raises(NotFound):
        resolve(store, "nothing-here")


def test_unreadable_file_names_it(store, tree):
    if os.geteuid() == 0:
        pytest.skip("root reads everything")
    os.chmod(tree / "sub" / "a.txt", 0)
    with pytest.raises(UsageError, match="a.txt"):
        create_snapshot(tree, store)


def test_verify_names_missing_and_corrupt_chunk(store, tree, tmp_path):
    snap = create_snapshot(tree, store)
    assert verify(store, snap.id) == []
    entry = next(e for e in snap.manifest.files() if e.path == "b.bin")
    h = entry.chunks[0][0]
    chunk = store.root / "chunks" / h[:2] / h
    os.chmod(chunk, 0o644)
    chunk.write_bytes(b"rot" + chunk.read_bytes()[3:])
    with pytest.raises(IntegrityError, match=rf"chunk {h[:12]} of b.bin is corrupt"):
        verify_or_raise(store, snap.id)
    # materialising a corrupt snapshot leaves nothing half-written at the destination
    with pytest.raises(IntegrityError):
        materialise(store, snap.id, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.partial*"))
    chunk.unlink()
    assert any(f"chunk {h[:12]} of b.bin is missing" in p for p in verify(store, snap.id, deep=False))


def test_diff_and_show(store, tree):
    a = create_snapshot(tree, store).id
    (tree / "sub" / "a.txt").write_text("beta\n")
    (tree / "new.txt").write_text("new\n")
    (tree / "run.sh").unlink()
    b = create_snapshot(tree, store).id
    d = diff(store, a, b)
    assert (d.added, d.removed, d.changed) == (["new.txt"], ["run.sh"], ["sub/a.txt"])
    assert d.shared_bytes >= 2 * 1024 * 1024
    info = show(store, b)
    assert info["files"] == 3 and {e["path"] for e in info["entries"]} >= {"new.txt", "sub", "link"}
    assert [r["id"] for r in list_snapshots(store)] == [a, b]


def test_overlapping_snapshots_share_chunks(store, tmp_path):
    rng = random.Random(11)
    root = tmp_path / "big"
    root.mkdir()
    for i in range(20):
        (root / f"f{i}").write_bytes(rng.randbytes(300_000))
    first = create_snapshot(root, store)
    (root / "f3").write_bytes(rng.randbytes(300_000))
    (root / "f4").write_bytes(rng.randbytes(300_000))
    second = create_snapshot(root, store)
    assert second.new_bytes == 600_000


def test_disk_full_leaves_no_snapshot(store, tree, monkeypatch):
    """The second chunk write meets a full disk: no manifest, no name, and gc frees the first chunk."""
    import fleet.snapshots.local_store as local_store
    real_write = os.write
    chunks_written: set[str] = set()

    def failing(fd, data):
        # a chunk is written under a dot name beside its final one (in one write or more), then renamed
        path = os.readlink(f"/proc/self/fd/{fd}")
        if path.startswith(str(store.root / "chunks")) and os.path.basename(path).startswith("."):
            chunks_written.add(path)
            if len(chunks_written) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(local_store.os, "write", failing)
    with pytest.raises(EnvironmentProblem, match="full") as caught:
        create_snapshot(tree, store, name="never", workers=1)
    monkeypatch.setattr(local_store.os, "write", real_write)
    assert len(chunks_written) == 2
    assert store.list_manifests() == [] and store.list_refs() == {}
    assert list((store.root / "tmp").iterdir()) == []      # the half-written chunk is gone
    assert list((store.root / "chunks").glob("*/.*")) == []
    # The store is named (not its chunks/f9), and the gc the line gives is one that frees the space:
    # plain `fleet snapshot gc` keeps chunks younger than an hour, exactly the ones this create wrote.
    line = caught.value.one_line()
    assert line.startswith(f"snapshot store {store.root} is full; nothing was published"), line
    assert "`fleet snapshot gc --grace 0`" in line
    assert gc(store)["deleted_chunks"] == 0
    assert gc(store, grace_s=0)["deleted_chunks"] >= 1     # the orphaned chunk goes


def test_write_error_becomes_one_line(store, monkeypatch):
    def boom(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(EnvironmentProblem, match="is full; nothing was published"):
        store.put_manifest("a" * 64, b"{}")
    assert not (store.root / "manifests" / ("a" * 64)).exists()
    assert list((store.root / "tmp").iterdir()) == []


def test_gc_removes_what_a_crashed_writer_left_after_the_grace(store, tree):
    """A writer killed between creating a chunk's temporary file and renaming it leaves a dot name
    beside the chunks: not a chunk (never listed, never served), removed by gc once it is old."""
    create_snapshot(tree, store)
    fan_out = next(d for d in (store.root / "chunks").iterdir() if d.is_dir())
    left = fan_out / (".%s.123.456" % ("e" * 64))
    left.write_bytes(b"half a chunk")
    assert "e" * 64 not in set(store.iter_chunks())
    gc(store, grace_s=3600)
    assert left.exists()                                     # might be a create in progress
    old = time.time() - 7200
    os.utime(left, (old, old))
    gc(store, grace_s=3600)
    assert not left.exists()


def test_fan_out_directories_are_spread_where_the_filesystem_can(store, tree):
    """chunks/ is marked a top directory (ext4 then spreads the fan-out directories, and the chunks'
    inodes with them, over the disk's groups) on a filesystem that has the flag; others are left be."""
    import fcntl
    import struct
    create_snapshot(tree, store)
    fd = os.open(store.root / "chunks", os.O_RDONLY)
    try:
        flags = struct.unpack("l", fcntl.ioctl(fd, 0x80086601, struct.pack("l", 0)))[0]
    except OSError:
        pytest.skip("this filesystem has no inode flags")
    finally:
        os.close(fd)
    assert flags & 0x00020000


def test_gc_keeps_live_and_young_chunks(store, tree):
    create_snapshot(tree, store)
    store.put_chunk("f" * 64, b"orphan")
    assert gc(store, grace_s=3600)["deleted_chunks"] == 0    # might belong to a create in progress
    res = gc(store, grace_s=0)
    assert res["deleted_chunks"] == 1 and not store.has_chunks(["f" * 64])
    assert res["live_chunks"] >= 3


@pytest.mark.parametrize("dirent_bytes", [0, 80, 10**9], ids=["stats", "measured", "listings"])
def test_has_chunks_answers_the_same_by_stats_or_by_listing(store, monkeypatch, dirent_bytes):
    """Many chunks asked about: fan-out directories are listed unless they hold far more than was
    asked (a large store), where each chunk is stat'ed; the answer is the same either way."""
    import hashlib

    import fleet.snapshots.local_store as local_store
    monkeypatch.setattr(local_store, "DIRENT_BYTES", dirent_bytes)
    ids = [hashlib.sha256(b"%d" % i).hexdigest() for i in range(3000)]
    for h in ids[::2]:
        store.put_chunk(h, b"x")
    assert store.has_chunks(ids) == set(ids[::2])
    assert store.has_chunks(ids[:5]) == set(ids[:5:2])
    assert store.has_chunks(["0" * 64] * 20) == set()           # a fan-out directory never made
