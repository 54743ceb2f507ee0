"""Snapshot creation: stable ids, the stat cache (an unchanged tree is not read), no state written into
the user's directories, parallel hashing that agrees with a plain sha256, typed progress, store format."""
from __future__ import annotations

import builtins
import hashlib
import io
import json
import os
import random

import pytest

import fleet.snapshots.create as create_mod
import fleet.snapshots.statcache as statcache
from fleet.errors import EnvironmentProblem
from fleet.snapshots import create_snapshot, load, materialise, open_store, verify
from fleet.snapshots.progress import SnapshotProgress


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    return open_store(str(tmp_path / "store"))


@pytest.fixture
def tree(tmp_path):
    rng = random.Random(3)
    root = tmp_path / "data"
    (root / "shards").mkdir(parents=True)
    for i in range(12):
        (root / "shards" / f"s{i:02d}.bin").write_bytes(rng.randbytes(rng.randint(0, 40_000)))
    (root / "big.bin").write_bytes(rng.randbytes(3 * 1024 * 1024))
    (root / "link").symlink_to("big.bin")
    return root


@pytest.fixture
def opened(monkeypatch):
    """Every path opened (os.open, open, io.open) while a test runs: a read must open the file."""
    seen: list[str] = []
    real_os_open, real_open, real_io_open = os.open, builtins.open, io.open

    def os_open(path, *a, **k):
        seen.append(os.fspath(path) if not isinstance(path, int) else "")
        return real_os_open(path, *a, **k)

    def py_open(path, *a, **k):
        seen.append(os.fspath(path) if not isinstance(path, int) else "")
        return real_open(path, *a, **k)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(builtins, "open", py_open)
    monkeypatch.setattr(io, "open", py_open)
    return seen


def _reads_under(seen: list[str], root) -> list[str]:
    return [p for p in seen if p.startswith(str(root) + os.sep)]


def test_unchanged_tree_is_resnapshotted_without_reading_a_file(store, tree, opened, monkeypatch):
    monkeypatch.setattr(statcache, "RACY_S", 0.0)       # the files were just written; see the racy test below
    first = create_snapshot(tree, store)
    assert len(_reads_under(opened, tree)) == 13         # the counter sees reads: every file once
    opened.clear()
    again = create_snapshot(tree, store)
    assert _reads_under(opened, tree) == []
    assert again.id == first.id and again.bytes_hashed == 0 and again.files_cached == 13
    # one changed file (same size, new content): only it is read again, and the id changes
    data = bytearray((tree / "shards" / "s03.bin").read_bytes())
    data[0] ^= 0xFF
    (tree / "shards" / "s03.bin").write_bytes(bytes(data))
    opened.clear()
    third = create_snapshot(tree, store)
    assert _reads_under(opened, tree) == [str(tree / "shards" / "s03.bin")]
    assert third.id != first.id and third.files_cached == 12


def test_a_cached_file_whose_chunks_left_the_store_is_read_again(store, tree, monkeypatch):
    monkeypatch.setattr(statcache, "RACY_S", 0.0)
    first = create_snapshot(tree, store)
    h = next(e for e in first.manifest.files() if e.path == "big.bin").chunks[0][0]
    store.delete_chunk(h)
    again = create_snapshot(tree, store)
    assert again.id == first.id and store.has_chunks([h]) and again.bytes_hashed >= 3 * 1024 * 1024
    assert verify(store, again.id) == []


def test_files_changed_within_the_racy_window_are_not_trusted_to_the_cache(store, tree, monkeypatch):
    monkeypatch.setattr(statcache, "RACY_S", 3600.0)    # every file here changed less than an hour ago
    create_snapshot(tree, store)
    again = create_snapshot(tree, store)
    assert again.files_cached == 0 and again.bytes_hashed > 0   # mtime granularity: could change unseen


def test_id_is_stable_across_runs_workers_and_stores_and_a_changed_byte_changes_it(store, tree, tmp_path):
    a = create_snapshot(tree, store, use_cache=False)
    b = create_snapshot(tree, open_store(str(tmp_path / "other")), use_cache=False, workers=1)
    c = create_snapshot(tree, store, use_cache=False, workers=5)
    assert a.id == b.id == c.id
    big = bytearray((tree / "big.bin").read_bytes())
    big[2_000_000] ^= 1
    (tree / "big.bin").write_bytes(bytes(big))
    d = create_snapshot(tree, store, use_cache=False)
    assert d.id != a.id
    # content-defined chunks: one flipped byte stores about one chunk, not the whole file
    assert 0 < d.new_bytes < len(big) // 2


def test_split_hashing_of_large_files_matches_a_plain_sha256(store, tmp_path, monkeypatch):
    monkeypatch.setattr(create_mod, "SPLIT_MIN", 1024 * 1024)   # hashed by two threads from 1 MiB up
    root = tmp_path / "big"
    root.mkdir()
    rng = random.Random(9)
    for i in range(3):
        (root / f"f{i}").write_bytes(rng.randbytes(5 * 1024 * 1024 + i))
    snap = create_snapshot(root, store, use_cache=False, workers=4)     # each file is more than a share
    for e in snap.manifest.files():
        data = (root / e.path).read_bytes()
        assert e.sha256 == hashlib.sha256(data).hexdigest() and e.size == len(data)
        assert b"".join(store.get_chunk(h) for h, _ in e.chunks) == data
    out = materialise(store, snap.id, tmp_path / "out")
    assert (out / "f2").read_bytes() == (root / "f2").read_bytes()


def test_no_state_is_written_into_the_data_directory(store, tree, tmp_path):
    before = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*"))
    create_snapshot(tree, store)
    create_snapshot(tree, store)
    assert sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*")) == before
    assert (tmp_path / "home" / "cache" / "statcache.db").exists()     # kept under FLEET_HOME instead


def test_old_marker_files_are_never_part_of_a_snapshot(store, tree, tmp_path):
    plain = create_snapshot(tree, store, use_cache=False)
    (tree / ".fleet-snapshot").write_text("a" * 64 + "\n")
    (tree / "shards" / ".fleet-snapshot").write_text("b" * 64 + "\n")
    marked = create_snapshot(tree, store, use_cache=False)
    assert marked.id == plain.id
    # and materialising leaves no marker in the tree it makes (the record lives under FLEET_HOME)
    out = materialise(store, marked.id, tmp_path / "out")
    assert not (out / ".fleet-snapshot").exists()
    assert materialise(store, marked.id, out) == out


def test_progress_is_typed_and_ends_complete(store, tree):
    seen: list[SnapshotProgress] = []
    snap = create_snapshot(tree, store, use_cache=False, progress=seen.append)
    assert all(isinstance(p, SnapshotProgress) for p in seen) and len(seen) >= 2
    total = sum(e.size for e in snap.manifest.files())
    assert seen[0].bytes_total == seen[-1].bytes_total == total and seen[0].files_total == 13
    last = seen[-1]
    assert last.finished and last.bytes_done == total and last.files_done == 13 and last.bytes_hashed == total
    assert last.bytes_stored == snap.new_bytes
    done = [p.bytes_done for p in seen]
    assert done == sorted(done)


def test_new_store_records_its_format_and_a_newer_one_is_refused(store, tmp_path):
    fmt = json.loads((store.root / "format").read_text())
    assert fmt["format"] == 3 and fmt["chunker"] == "fastcdc2020/min128k/avg256k/max1m/nc1"
    (store.root / "format").write_text('{"format": 99}\n')
    with pytest.raises(EnvironmentProblem, match="format 99; this fleet reads formats 1, 2, 3"):
        open_store(str(store.root))


def test_manifests_of_new_snapshots_are_format_3(store, tree):
    snap = create_snapshot(tree, store, use_cache=False)
    assert json.loads(store.get_manifest(snap.id))["format"] == 3
    assert load(store, snap.id).format == 3


# -- the whole-tree hit and the store's direct writes ----------------------------------------------
def test_an_unchanged_tree_is_its_last_snapshot_without_encoding_a_manifest(store, tree, monkeypatch):
    monkeypatch.setattr(statcache, "RACY_S", 0.0)
    first = create_snapshot(tree, store)
    encoded = []
    real = create_mod.Manifest.canonical_bytes
    monkeypatch.setattr(create_mod.Manifest, "canonical_bytes", lambda self: encoded.append(1) or real(self))
    again = create_snapshot(tree, store, name="again")
    assert encoded == [] and again.id == first.id and again.files_cached == 13
    assert store.get_ref("again") == first.id
    assert [e.path for e in again.manifest.entries] and again.manifest.id == first.id


@pytest.mark.parametrize("change", ["new_dir", "relink", "new_link", "remove_file"])
def test_a_tree_whose_shape_changed_is_encoded_again(store, tree, monkeypatch, change):
    """Only files have stat records: a new empty directory, a symlink pointing elsewhere, a new symlink
    or a removed file changes the snapshot, and the whole-tree hit must not hide it."""
    monkeypatch.setattr(statcache, "RACY_S", 0.0)
    first = create_snapshot(tree, store)
    if change == "new_dir":
        (tree / "empty").mkdir()
    elif change == "relink":
        (tree / "link").unlink()
        (tree / "link").symlink_to("shards")
    elif change == "new_link":
        (tree / "shards" / "alias").symlink_to("s02.bin")
    else:
        (tree / "shards" / "s01.bin").unlink()
    again = create_snapshot(tree, store)
    assert again.id != first.id
    assert again.id == create_snapshot(tree, open_store(str(tree.parent / "fresh")), use_cache=False).id


def test_store_writes_large_chunks_past_the_page_cache_and_falls_back_where_refused(store, tree, monkeypatch):
    """O_DIRECT for large chunks (their whole blocks; the last partial block through the page cache);
    a filesystem that answers EINVAL gets ordinary writes from then on; both give the same,
    verifiable chunks."""
    import errno

    import fleet.snapshots.local_store as local_store
    if not local_store._O_DIRECT:
        pytest.skip("no O_DIRECT on this platform")
    direct_opens = []
    real_open = os.open

    def spy(path, flags, *a, **k):
        if flags & local_store._O_DIRECT:
            direct_opens.append(path)
        return real_open(path, flags, *a, **k)
    monkeypatch.setattr(local_store.os, "open", spy)
    first = create_snapshot(tree, store, use_cache=False)
    assert direct_opens and store._direct          # big.bin's chunks (this filesystem takes O_DIRECT)
    assert verify(store, first.id) == []
    large = [(h, n) for e in first.manifest.files() for h, n in e.chunks if n >= local_store.DIRECT_MIN]
    assert any(n % local_store.ALIGN for _, n in large)      # a chunk that ends inside a block
    for e in first.manifest.files():
        for h, n in e.chunks:
            assert os.path.getsize(store.chunk_path(h)) == n

    refusing = open_store(str(tree.parent / "refusing"))

    def refuse(path, flags, *a, **k):
        if flags & local_store._O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *a, **k)
    monkeypatch.setattr(local_store.os, "open", refuse)
    second = create_snapshot(tree, refusing, use_cache=False)
    assert second.id == first.id and not refusing._direct and verify(refusing, second.id) == []
    assert os.listdir(tree.parent / "refusing" / "tmp") == []
    assert list((tree.parent / "refusing" / "chunks").glob("*/.*")) == []


def test_every_new_chunk_and_its_directory_is_fsynced_before_the_manifest(store, tree, monkeypatch):
    """Durability without syncfs (which would wait for every other program's dirty data): the files
    written and the fan-out directories that gained them, all before the manifest exists."""
    import fleet.snapshots.local_store as local_store
    events = []
    real_fsync, real_put = os.fsync, local_store.LocalStore.put_manifest

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def put_manifest(self, sid, data):
        events.append(("manifest", sid))
        return real_put(self, sid, data)
    monkeypatch.setattr(local_store.os, "fsync", fsync)
    monkeypatch.setattr(local_store.LocalStore, "put_manifest", put_manifest)
    snap = create_snapshot(tree, store, use_cache=False)
    at = events.index(("manifest", snap.id))
    synced = {path for kind, path in events[:at] if kind == "fsync"}
    chunks = {store.chunk_path(h) for e in snap.manifest.files() for h, _ in e.chunks}
    assert chunks and chunks <= synced
    assert {os.path.dirname(p) for p in chunks} <= synced
    assert create_snapshot(tree, store, use_cache=False).id == snap.id     # nothing new: nothing to flush


def test_a_chunk_another_writer_just_stored_is_fsynced_by_the_snapshot_that_uses_it(store, tree, monkeypatch):
    """A chunk already present but young (another process may not have flushed it yet) is made
    durable before this snapshot's manifest refers to it; an old one is not fsynced again."""
    import fleet.snapshots.local_store as local_store
    first = create_snapshot(tree, store, use_cache=False)
    h = next(e for e in first.manifest.files() if e.path == "big.bin").chunks[0][0]
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(local_store.os, "fsync",
                        lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real_fsync(fd))
    other = open_store(str(store.root))                 # a second writer on the same store
    create_snapshot(tree, other, use_cache=False)
    assert store.chunk_path(h) in synced
    synced.clear()
    old = os.stat(store.chunk_path(h)).st_mtime - 3600
    for e in first.manifest.files():
        for c, _ in e.chunks:
            os.utime(store.chunk_path(c), (old, old))
    create_snapshot(tree, open_store(str(store.root)), use_cache=False)
    assert synced == []


def test_stat_records_an_older_fleet_saved_as_json_are_still_used(store, tree, opened, monkeypatch):
    """Records are saved with marshal now; a stat cache written by an older fleet (zlib'd JSON) still
    spares the re-read of every unchanged file, and is rewritten in the new form."""
    import zlib
    monkeypatch.setattr(statcache, "RACY_S", 0.0)
    first = create_snapshot(tree, store)
    cache = statcache.StatCache.open()
    key, st_root = os.path.abspath(tree), os.stat(tree)
    records = cache.load(key, st_root, store.url)
    assert len(records) == 13
    old_form = zlib.compress(json.dumps(records, separators=(",", ":")).encode(), 1)
    cache.conn.execute("UPDATE trees SET data = ?", (old_form,))
    assert cache.load(key, st_root, store.url) == records
    cache.close()
    statcache.save_hit(key, store.url, None)                 # no whole-tree hit: the records must do it
    opened.clear()
    again = create_snapshot(tree, store)
    assert _reads_under(opened, tree) == [] and again.id == first.id and again.files_cached == 13


def test_a_file_written_to_while_it_is_read_is_refused_not_stored_torn(tmp_path, monkeypatch):
    """A red-team finding: a 6 MiB file rewritten after its first chunk was read was stored as the
    first chunk's old bytes and the rest's new ones, content the file never held, without a word."""
    import os as _os

    import fleet.snapshots.chunking as chunking
    from fleet.errors import UsageError
    from fleet.snapshots import create_snapshot, open_store
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    data = tmp_path / "d"
    data.mkdir()
    path = data / "f.bin"
    path.write_bytes(b"A" * (6 * 1024 * 1024))
    views = chunking.chunk_views

    def rewritten_meanwhile(f):
        for i, view in enumerate(views(f)):
            yield view
            if i == 0:
                fd = _os.open(path, _os.O_WRONLY)
                _os.pwrite(fd, b"B" * (6 * 1024 * 1024), 0)
                _os.close(fd)
    monkeypatch.setattr(chunking, "chunk_views", rewritten_meanwhile)
    with pytest.raises(UsageError, match="changed while it was being snapshotted"):
        create_snapshot(data, open_store(str(tmp_path / "store")))


def test_the_whole_tree_hit_does_not_count_a_chunk_cut_short_in_the_store(tmp_path, monkeypatch):
    """A red-team finding: an unchanged tree re-snapshotted through the whole-tree hit counted a chunk
    truncated in the store as present (names only); the stat-cache path sends it again."""
    from fleet.snapshots import create_snapshot, open_store, verify
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    data = tmp_path / "d2"
    data.mkdir()
    (data / "a.bin").write_bytes(os.urandom(300_000))
    (data / "b.bin").write_bytes(os.urandom(300_000))
    store = open_store(str(tmp_path / "store"))
    import time as _time
    _time.sleep(2.2)                              # older than the stat cache's 2 s window (mtime and ctime)
    first = create_snapshot(data, store)          # now remembered: the next create is a whole-tree hit
    assert create_snapshot(data, store).files_cached == 2
    h = sorted(first.manifest.chunk_ids())[0]
    path = store.root / "chunks" / h[:2] / h
    os.chmod(path, 0o644)
    os.truncate(path, 1000)
    again = create_snapshot(data, store)
    assert again.id == first.id and again.new_chunks == 1
    assert verify(store, first.id, deep=True) == []
