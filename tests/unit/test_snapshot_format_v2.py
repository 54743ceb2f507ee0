"""A store written by the format 2 code (tests/unit/data/snapshot_store_v2: FastCDC with 1 MiB average
chunks, made by that code and never regenerated) still resolves, verifies, restores byte for byte,
takes format 3 snapshots beside the old ones (its format file brought up to date, gc keeping both),
and a read-only copy of it is read without being rewritten."""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import stat
from pathlib import Path

import pytest

from fleet.snapshots import create_snapshot, gc, load, materialise, open_store, resolve, verify
from fleet.snapshots.manifest import FORMAT

FIXTURE = Path(__file__).parent / "data" / "snapshot_store_v2"
V2_ID = "86abfb8a7fa0f0868c832cae3f7e5681b373179efdb83d47a405285eb1c6ca2a"
EXPECTED = {
    "a.txt": b"hello v2\n",
    "run.sh": b"#!/bin/sh\necho hi\n",
    "sub/b.txt": b"nested\n",
    "empty": b"",
    "big.bin": random.Random(16).randbytes(600_000),
}


@pytest.fixture
def v2_store(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    copy = tmp_path / "store-v2"
    shutil.copytree(FIXTURE, copy)
    (copy / "README.md").unlink()
    return copy


def test_format_2_store_resolves_verifies_and_restores(v2_store, tmp_path):
    store = open_store(str(v2_store))
    assert resolve(store, "v2-data") == V2_ID
    manifest = load(store, V2_ID)
    assert manifest.format == 2 and manifest.id == V2_ID        # re-serialised to the same bytes
    assert len(next(e for e in manifest.files() if e.path == "big.bin").chunks) == 2
    assert verify(store, V2_ID, deep=True) == []
    out = materialise(store, V2_ID, tmp_path / "out", read_only=True)
    for rel, data in EXPECTED.items():
        assert (out / rel).read_bytes() == data
    assert os.readlink(out / "link") == "a.txt" and (out / "run.sh").stat().st_mode & 0o111


def test_new_snapshots_are_format_3_beside_the_old_ones(v2_store, tmp_path):
    assert json.loads((v2_store / "format").read_text())["format"] == 2
    store = open_store(str(v2_store))
    assert json.loads((v2_store / "format").read_text())["format"] == FORMAT == 3   # names the newest chunker
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(EXPECTED["big.bin"])        # same bytes, cut at other boundaries now
    snap = create_snapshot(src, store, use_cache=False)
    big = next(e for e in snap.manifest.files() if e.path == "big.bin")
    assert load(store, snap.id).format == 3 and len(big.chunks) >= 3
    assert big.sha256 == hashlib.sha256(EXPECTED["big.bin"]).hexdigest()    # file hashes do not depend on it
    assert gc(store, grace_s=0)["deleted_chunks"] == 0
    assert verify(store, V2_ID, deep=True) == [] and verify(store, snap.id, deep=True) == []


def test_a_read_only_format_2_store_is_read_as_it_is(v2_store, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes through read-only modes")
    for dirpath, dirs, files in os.walk(v2_store):
        for name in files + dirs:
            p = os.path.join(dirpath, name)
            os.chmod(p, os.stat(p).st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    os.chmod(v2_store, 0o555)
    try:
        store = open_store(str(v2_store))
        assert store.format == 2 and verify(store, V2_ID, deep=True) == []
        assert json.loads((v2_store / "format").read_text())["format"] == 2
    finally:
        for dirpath, dirs, _files in os.walk(v2_store):
            os.chmod(dirpath, 0o755)
