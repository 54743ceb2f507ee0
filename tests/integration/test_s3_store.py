"""The S3 store against a real moto server: same ids as local, multipart, errors on one line."""
from __future__ import annotations

import random

import boto3
import pytest

from fleet.errors import EnvironmentProblem, IntegrityError, NotFound
from fleet.snapshots import create_snapshot, gc, list_snapshots, materialise, open_store, resolve, verify


@pytest.fixture
def bucket(aws_env):
    s3 = boto3.client("s3", endpoint_url=aws_env)
    s3.create_bucket(Bucket="fleet-test")
    return s3


@pytest.fixture
def tree(tmp_path):
    rng = random.Random(3)
    root = tmp_path / "data"
    (root / "d").mkdir(parents=True)
    for i in range(12):
        (root / "d" / f"small{i}.txt").write_text(f"row {i}\n" * (i + 1))
    (root / "large.bin").write_bytes(rng.randbytes(6 * 1024 * 1024))
    return root


def test_create_verify_restore_through_s3(bucket, tree, tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    store = open_store("s3://fleet-test/team/snaps")
    snap = create_snapshot(tree, store, name="train")
    assert snap.id == create_snapshot(tree, open_store(str(tmp_path / "local")), use_cache=False).id
    keys = [o["Key"] for o in bucket.list_objects_v2(Bucket="fleet-test")["Contents"]]
    assert all(k.startswith("team/snaps/") for k in keys)
    assert f"team/snaps/manifests/{snap.id}" in keys and "team/snaps/refs/train" in keys
    assert resolve(store, "train") == snap.id
    assert [r["id"] for r in list_snapshots(store)] == [snap.id]
    assert verify(store, snap.id) == []
    out = materialise(store, snap.id, tmp_path / "out")
    assert (out / "large.bin").read_bytes() == (tree / "large.bin").read_bytes()
    again = create_snapshot(tree, store, name="train", use_cache=False)
    assert again.id == snap.id and again.new_chunks == 0


def test_large_manifest_object_goes_multipart(bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    store = open_store("s3://fleet-test/p")
    big = random.Random(1).randbytes(9 * 1024 * 1024)     # over the multipart threshold
    store.put_manifest("b" * 64, big)
    assert store.get_manifest("b" * 64) == big
    head = bucket.head_object(Bucket="fleet-test", Key="p/manifests/" + "b" * 64)
    assert "-" in head["ETag"]          # multipart ETags are "<md5>-<parts>"


def test_missing_and_corrupt_chunk_named(bucket, tree, tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    store = open_store("s3://fleet-test/p")
    snap = create_snapshot(tree, store)
    entry = next(e for e in snap.manifest.files() if e.path == "large.bin")
    h = entry.chunks[1][0]
    bucket.put_object(Bucket="fleet-test", Key=f"p/chunks/{h[:2]}/{h}", Body=b"garbage")
    assert any(f"chunk {h[:12]} of large.bin is corrupt" in p for p in verify(store, snap.id))
    bucket.delete_object(Bucket="fleet-test", Key=f"p/chunks/{h[:2]}/{h}")
    problems = verify(store, snap.id, deep=False)
    assert problems == [f"snapshot {snap.id[:12]}: chunk {h[:12]} of large.bin is missing from s3://fleet-test/p"]
    with pytest.raises(IntegrityError, match="missing"):
        materialise(store, snap.id, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_gc_on_s3(bucket, tree, tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    store = open_store("s3://fleet-test/p")
    create_snapshot(tree, store)
    store.put_chunk("e" * 64, b"orphan")
    assert gc(store, grace_s=0)["deleted_chunks"] == 1
    assert not store.has_chunks(["e" * 64])


def test_missing_bucket_is_one_line(aws_env):
    with pytest.raises(NotFound, match="S3 bucket 'no-such-bucket' does not exist"):
        open_store("s3://no-such-bucket/x")


def test_denied_bucket_is_one_line(bucket, monkeypatch):
    bucket.put_bucket_policy(Bucket="fleet-test", Policy=(
        '{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Principal":"*","Action":"s3:*",'
        '"Resource":["arn:aws:s3:::fleet-test","arn:aws:s3:::fleet-test/*"]}]}'))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAOTHERUSER0000000")
    try:
        store = open_store("s3://fleet-test/p")
    except EnvironmentProblem as exc:      # some S3s refuse HEAD bucket already
        assert "access denied" in str(exc)
        return
    with pytest.raises(EnvironmentProblem, match="access denied"):
        store.put_chunk("c" * 64, b"x")


def test_a_name_taken_on_s3_after_this_create_checked_is_not_overwritten(bucket, tmp_path, monkeypatch):
    """Two `snapshot create --name train` at once: the one whose put comes second keeps the first's
    name as it is (S3's conditional put), and says what the name holds."""
    from fleet.snapshots.store import claim_ref
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    store = open_store("s3://fleet-test/race")
    first, second = "a" * 64, "b" * 64
    real_get = store.get_ref
    calls = []

    def checked_before_the_other_wrote(name):   # this create's check ran before the other's put landed
        calls.append(name)
        return None if len(calls) == 1 else real_get(name)

    bucket.put_object(Bucket="fleet-test", Key="race/refs/train", Body=first.encode() + b"\n")
    monkeypatch.setattr(store, "get_ref", checked_before_the_other_wrote)
    assert claim_ref(store, "train", second) == first
    assert real_get("train") == first
    assert claim_ref(store, "fresh", second) == second and real_get("fresh") == second


def test_where_conditional_puts_are_not_implemented_the_name_is_still_written(bucket, tmp_path, monkeypatch):
    """An S3-compatible store that answers NotImplemented to If-None-Match: check, then write, as before."""
    from botocore.exceptions import ClientError
    from fleet.snapshots.store import claim_ref
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    store = open_store("s3://fleet-test/compat")
    client = getattr(store, "inner", store).client
    real_put = client.put_object

    def put(**kw):
        if "IfNoneMatch" in kw:
            raise ClientError({"Error": {"Code": "NotImplemented", "Message": "no"}}, "PutObject")
        return real_put(**kw)

    monkeypatch.setattr(client, "put_object", put)
    assert claim_ref(store, "n", "c" * 64) == "c" * 64 and store.get_ref("n") == "c" * 64
    assert claim_ref(store, "n", "d" * 64) == "c" * 64   # taken: what it holds, not overwritten
