"""A chunk cut short under its final name (red team): a crash or a full disk between a write and
its flush, or a hostile writer of a shared file:// store, leaves a chunk's name with fewer bytes.
Presence used to be the name alone, so a checkpoint upload never sent that chunk again and the
next restore failed. Presence now means the name with the chunk's size (a stat on file://, a HEAD
or a listing on S3, never the chunk's bytes): the upload sends it again and the restore is exact.
Real local machines (sshd), both stores (S3: a moto server)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from fleet.run.checkpoints import checkpoint_dir, prepare, upload
from fleet.snapshots import create_snapshot, open_store, statcache
from fleet.snapshots.catalog import load
from fleet.snapshots.restore import materialise, verify


@pytest.fixture(params=["file", "s3"])
def short_store(request, tmp_path):
    """(store, cut(h, n): leave only n bytes under chunk h's name)."""
    if request.param == "file":
        store = open_store(str(tmp_path / "store"))

        def cut(h: str, n: int) -> None:
            os.truncate(store.chunk_path(h), n)
        return store, cut
    import boto3
    endpoint = request.getfixturevalue("aws_env")
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket="fleet-short")
    store = open_store("s3://fleet-short/p")

    def cut_s3(h: str, n: int) -> None:
        key = f"p/chunks/{h[:2]}/{h}"
        body = s3.get_object(Bucket="fleet-short", Key=key)["Body"].read()
        s3.put_object(Bucket="fleet-short", Key=key, Body=body[:n])
    return store, cut_s3


def test_an_upload_over_a_chunk_cut_short_sends_it_again_and_restores_exactly(local_lease, fleet_home, tmp_path,
                                                                            short_store):
    store, cut = short_store
    lease = local_lease(gpus=1)
    [m] = lease.machines
    prepare(lease, store, "r-short", None)
    data = os.urandom(6 << 20)
    (Path(checkpoint_dir(m, "r-short")) / "model.bin").write_bytes(data)
    first = upload(m, store, "r-short")
    [entry] = load(store, first.snapshot_id).files()
    h, n = entry.chunks[1]
    cut(h, n // 2)
    assert any(f"chunk {h[:12]} of model.bin is corrupt" in p for p in verify(store, first.snapshot_id, deep=False))

    again = upload(m, store, "r-short")              # the same checkpoint: only the short chunk goes
    assert again.snapshot_id == first.snapshot_id and again.bytes_sent == n
    assert verify(store, again.snapshot_id) == []
    out = materialise(store, again.snapshot_id, tmp_path / "restored")
    assert (out / "model.bin").read_bytes() == data


def test_a_create_whose_stat_cache_vouches_for_a_file_writes_its_short_chunk_again(fleet_home, tmp_path,
                                                                                    monkeypatch):
    # The stat cache says the file is unchanged and names its chunks; one of them was cut short in
    # the store. The file is read again and the chunk rewritten, not trusted by its name.
    store = open_store(str(tmp_path / "store"))
    tree = tmp_path / "tree"
    tree.mkdir()
    data = os.urandom(3 << 20)
    (tree / "model.bin").write_bytes(data)
    (tree / "step.txt").write_text("1\n")
    monkeypatch.setattr(statcache, "RACY_S", 0.0)        # remembered though just written
    first = create_snapshot(tree, store)
    [entry] = [e for e in first.manifest.files() if e.path == "model.bin"]
    h, n = entry.chunks[1]
    os.truncate(store.chunk_path(h), n // 2)
    (tree / "step.txt").write_text("2\n")               # another file changed: not a whole-tree hit
    second = create_snapshot(tree, store)
    assert os.path.getsize(store.chunk_path(h)) == n     # written again
    assert verify(store, second.id) == []
    assert (materialise(store, second.id, tmp_path / "out") / "model.bin").read_bytes() == data
