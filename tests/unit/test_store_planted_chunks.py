"""A writer of a shared file:// store replaces a chunk with a FIFO or a link to /dev/zero: `snapshot
verify`, `audit --verify --deep` and `rerun` hung on the FIFO for ever, or read /dev/zero until
memory ran out. A chunk is read only as a regular file, never past any chunk's size, and such a
one is named corrupt like any chunk whose bytes do not hash to its id."""
from __future__ import annotations

import os

import pytest

from fleet.snapshots import create_snapshot, open_store
from fleet.snapshots.restore import verify


@pytest.fixture
def planted(tmp_path, fleet_home):
    src = tmp_path / "d"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(300_000))
    store = open_store(str(tmp_path / "store"))
    snap = create_snapshot(src, store)
    chunk = next(h for e in snap.manifest.files() for h, _n in e.chunks)
    return store, snap.id, chunk, store.chunk_path(chunk)


@pytest.mark.timeout(30)
def test_a_fifo_in_place_of_a_chunk_is_named_corrupt_not_waited_on(planted):
    store, sid, chunk, path = planted
    os.unlink(path)
    os.mkfifo(path)                             # nobody ever writes it
    problems = verify(store, sid, deep=True)
    assert problems == [f"snapshot {sid[:12]}: chunk {chunk[:12]} of a.bin is corrupt in {store.url}"], problems


@pytest.mark.timeout(30)
def test_a_link_to_dev_zero_in_place_of_a_chunk_is_named_corrupt_not_read_without_end(planted):
    store, sid, chunk, path = planted
    os.unlink(path)
    os.symlink("/dev/zero", path)
    assert verify(store, sid, deep=True) == [f"snapshot {sid[:12]}: chunk {chunk[:12]} of a.bin is corrupt in {store.url}"]
    assert store.get_chunk(chunk) == b""          # what a sync sends: the machine names it corrupt
