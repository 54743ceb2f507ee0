"""A snapshot removed by another user between the store's listing and the read of its manifest (a
team store: `snapshot rm` while `snapshot ls` or `gc` walks hundreds of manifests) made the whole
`ls` or `gc` fail with "no snapshot … in the store"; it is simply gone from the answer."""
from __future__ import annotations

import pytest

from fleet.snapshots import create_snapshot, open_store
from fleet.snapshots.catalog import gc, list_snapshots


@pytest.fixture
def racing(tmp_path, monkeypatch, fleet_home):
    store = open_store(str(tmp_path / "store"))
    ids = []
    for name in ("a", "b"):
        data = tmp_path / name
        data.mkdir()
        (data / "f").write_bytes(name.encode() * 1000)
        ids.append(create_snapshot(data, store).id)
    listed = store.list_manifests

    def list_then_remove():
        infos = listed()
        store.delete_manifest(ids[0])        # the teammate's `rm`, just after the listing
        return infos
    monkeypatch.setattr(store, "list_manifests", list_then_remove)
    return store, ids


def test_ls_leaves_out_a_snapshot_removed_while_it_lists(racing):
    store, ids = racing
    assert [r["id"] for r in list_snapshots(store)] == [ids[1]]


def test_gc_goes_on_when_a_snapshot_is_removed_while_it_reads_them(racing):
    store, ids = racing
    result = gc(store, grace_s=0)
    assert result["deleted_chunks"] == 1 and result["live_chunks"] == 1
    assert not store.has_manifest(ids[0]) and store.has_manifest(ids[1])
