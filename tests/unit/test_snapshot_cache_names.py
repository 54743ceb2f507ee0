"""A machine's host cache names its files by the sha256 a manifest gives: a manifest anyone with a
shared store can plant (a name moved to it, a ref file rewritten) must not name a path outside the
cache. A file hash of "/home/u/.bashrc" had the built file copied there; a chunk id naming an
existing file had that file deleted as a corrupt cache entry; a snapshot id with ".." did the same
to a *.z file."""
from __future__ import annotations

import hashlib
import io

import pytest

from fleet.snapshots import remote_helper as helper
from fleet.snapshots.remote_cache import Cache, Failure

END = b"0" * 64 + b"0" * 12 + b"\n"


@pytest.fixture
def world(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    return tmp_path, victim, Cache(str(tmp_path / "cache"), None)


def _chunks(cache, *parts: bytes) -> list:
    out = []
    for data in parts:
        h = hashlib.sha256(data).hexdigest()
        cache.put(h, data)
        out.append([h, len(data)])
    return out


def _materialise(tmp_path, manifest, cache, sid="a" * 64):
    target = {"dest": str(tmp_path / "data" / "root"), "ids": [sid], "read_only": True}
    helper.materialise(target, {sid: manifest}, cache, helper.Frames(io.BytesIO(END), set()))


@pytest.mark.parametrize("existing", [False, True])
def test_a_file_hash_naming_a_path_is_refused_and_nothing_there_changes(world, existing):
    # Absent, the built file was copied there; present, it was "a corrupt cached copy" and deleted.
    tmp_path, victim, cache = world
    where = victim if existing else tmp_path / "planted"
    chunks = _chunks(cache, b"#!/bin/sh\n", b"touch PWNED\n")
    manifest = {"entries": [{"path": "f", "type": "file", "mode": 0o644, "size": 22, "sha256": str(where),
                             "chunks": chunks}]}
    with pytest.raises(Failure, match="not a sha256"):
        _materialise(tmp_path, manifest, cache)
    assert victim.read_bytes() == b"precious" and not (tmp_path / "planted").exists()


def test_a_chunk_id_naming_an_existing_file_is_refused_not_evicted(world):
    tmp_path, victim, cache = world
    manifest = {"entries": [{"path": "f", "type": "file", "mode": 0o644, "size": 8, "sha256": "b" * 64,
                             "chunks": [[str(victim), 8]]}]}
    with pytest.raises(Failure, match="not a sha256"):
        helper.plan_targets([{"dest": str(tmp_path / "d"), "ids": ["a" * 64]}], {"a" * 64: manifest}, cache)
    assert victim.read_bytes() == b"precious"


@pytest.mark.parametrize("sid", ["../../victim", "/abs/victim", "A" * 64, "a" * 63])
def test_a_snapshot_id_that_is_not_a_sha256_never_becomes_a_path(world, sid):
    tmp_path, victim, cache = world
    (tmp_path / "victim.z").write_bytes(b"precious")
    sid = str(tmp_path / "victim") if sid.startswith("/abs") else sid
    assert cache.load_manifest(sid) is None and not cache.has_manifest(sid)     # it was "dropped as corrupt"
    with pytest.raises(Failure, match="not a sha256"):
        cache.save_manifest(sid, b"x")
    assert (tmp_path / "victim.z").read_bytes() == b"precious"
