"""Machines pull chunks from an S3 store themselves (presigned GETs), not through the controller's SSH
channel; what they cannot fetch falls back to the SSH push. moto server on loopback + a local sshd machine."""
from __future__ import annotations

import os
import random

import boto3
import pytest

from fleet.errors import IntegrityError
from fleet.snapshots import create_snapshot, open_store
from fleet.snapshots.sync import Target, sync_machine
from fleet.snapshots.sync_remote import data_dir, helper_source


@pytest.fixture
def s3_store(aws_env):
    boto3.client("s3", endpoint_url=aws_env).create_bucket(Bucket="fleet-direct")
    return open_store("s3://fleet-direct/snaps")


@pytest.fixture
def tree(tmp_path):
    rng = random.Random(21)
    root = tmp_path / "train"
    (root / "shards").mkdir(parents=True)
    for i in range(8):
        (root / "shards" / f"s{i}.bin").write_bytes(rng.randbytes(20_000 + i))
    (root / "big.bin").write_bytes(rng.randbytes(3 * 1024 * 1024))
    return root


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_machine_pulls_chunks_from_s3_directly(fleet_home, local_lease, s3_store, tree):
    snap = create_snapshot(tree, s3_store)
    (m,) = local_lease(gpus=1).machines
    dest = data_dir(m, "train")
    stats = sync_machine(m, s3_store, [Target(dest, [snap.id], read_only=True)], {snap.id: snap.manifest})
    assert stats.bytes_sent == 0 and stats.chunks_sent == 0          # no chunk data through SSH
    assert stats.bytes_direct == snap.manifest.unique_chunk_bytes()
    assert stats.chunks_direct == len(snap.manifest.chunk_ids())
    helper = len(helper_source()) if stats.helper_sent else 0        # sent once per host, then cached there
    assert stats.wire_bytes - helper < 64 * 1024                     # manifests, URLs, frames: no data
    got = {p: open(os.path.join(dest, p), "rb").read() for p in _files(tree)}
    assert got == _files(tree)


def test_failed_downloads_fall_back_to_ssh(fleet_home, local_lease, s3_store, tree, monkeypatch):
    snap = create_snapshot(tree, s3_store)
    big = next(e for e in snap.manifest.files() if e.path == "big.bin")
    broken = {h for h, _ in big.chunks}
    real = s3_store.presign_get
    # Those chunks' URLs point at a port nothing listens on: the machine cannot fetch them.
    monkeypatch.setattr(s3_store, "presign_get",
                        lambda h, ttl: "http://127.0.0.1:9/nothing" if h in broken else real(h, ttl))
    (m,) = local_lease(gpus=1).machines
    dest = data_dir(m, "train")
    stats = sync_machine(m, s3_store, [Target(dest, [snap.id], read_only=True)], {snap.id: snap.manifest})
    # Every unfetched chunk came through SSH, those of big.bin among them; after the first failure the
    # machine stops trying (an unreachable store would cost a timeout per chunk).
    assert stats.bytes_sent + stats.bytes_direct == snap.manifest.unique_chunk_bytes()
    assert stats.bytes_sent >= big.size and stats.chunks_sent + stats.chunks_direct == len(snap.manifest.chunk_ids())
    assert "URLError" in (stats.direct_error or "")
    assert open(os.path.join(dest, "big.bin"), "rb").read() == (tree / "big.bin").read_bytes()


def test_corrupt_s3_chunk_is_named_and_nothing_materialised(fleet_home, local_lease, s3_store, tree, aws_env):
    snap = create_snapshot(tree, s3_store)
    entry = next(e for e in snap.manifest.files() if e.path == "shards/s3.bin")
    h = entry.chunks[0][0]
    boto3.client("s3", endpoint_url=aws_env).put_object(Bucket="fleet-direct", Key=f"snaps/chunks/{h[:2]}/{h}",
                                                        Body=b"garbage")
    (m,) = local_lease(gpus=1).machines
    dest = data_dir(m, "train")
    # The machine's download fails its hash check, the SSH push carries the same bad bytes, and the
    # controller then finds the store's own copy is corrupt: the error names the chunk and its file.
    with pytest.raises(IntegrityError, match=f"chunk {h[:12]} of shards/s3.bin is corrupt in s3://fleet-direct/snaps"):
        sync_machine(m, s3_store, [Target(dest, [snap.id], read_only=True)], {snap.id: snap.manifest})
    assert not os.path.exists(dest)


def test_links_to_chunks_and_source_objects_are_signature_version_4(fleet_home, aws_env, s3_store, tree):
    """S3 refuses the older (version 2) links botocore made by default for objects encrypted with a
    KMS key, which the stack's bucket uses: every direct pull failed on real AWS, and the controller
    streamed everything itself (moto accepts both, so the link's form is what is checked)."""
    from urllib.parse import parse_qs, urlparse

    from fleet.snapshots.sources import list_s3
    snap = create_snapshot(tree, s3_store)
    chunk = next(iter(snap.manifest.chunk_ids()))
    for url in (s3_store.presign_get(chunk),
                *list_s3("s3://fleet-direct/snaps/").presign(["s3://fleet-direct/snaps/" + "x"]).values()):
        query = parse_qs(urlparse(url).query)
        assert query.get("X-Amz-Algorithm") == ["AWS4-HMAC-SHA256"], url
        assert "Signature" not in query and "AWSAccessKeyId" not in query, url
