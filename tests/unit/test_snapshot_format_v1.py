"""A store written by the format 1 code (tests/unit/data/snapshot_store_v1, made by that code and
never regenerated) still resolves, verifies chunk by chunk, restores byte for byte, takes new (current
format) snapshots beside the old ones, and backs an old run record through `fleet audit --verify --deep`."""
from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

import pytest

from fleet.snapshots import create_snapshot, gc, load, materialise, open_store, resolve, verify
from fleet.snapshots.manifest import FORMAT
from tests.conftest import run_fleet

FIXTURE = Path(__file__).parent / "data" / "snapshot_store_v1"
V1_ID = "de456a4aaa2afa9f614ff08abe31d946bab30185bab90d8251981e5f931c7645"
EXPECTED = {
    "a.txt": b"hello v1\n",
    "run.sh": b"#!/bin/sh\necho hi\n",
    "sub/b.txt": b"nested\n",
    "empty": b"",
    "big.txt": random.Random(75).randbytes(16384) * 80,
}


@pytest.fixture
def v1_store(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    copy = tmp_path / "store-v1"
    shutil.copytree(FIXTURE, copy)
    return copy


def test_old_store_resolves_verifies_and_restores(v1_store, tmp_path):
    assert not (v1_store / "format").exists()          # as old fleets left it
    store = open_store(str(v1_store))
    assert resolve(store, "v1-data") == V1_ID
    manifest = load(store, V1_ID)
    assert manifest.format == 1 and manifest.id == V1_ID      # re-serialised to the same bytes
    assert len(next(e for e in manifest.files() if e.path == "big.txt").chunks) == 5
    assert verify(store, V1_ID, deep=True) == []
    out = materialise(store, V1_ID, tmp_path / "out", read_only=True)
    for rel, data in EXPECTED.items():
        assert (out / rel).read_bytes() == data
    assert (out / "run.sh").stat().st_mode & 0o111 and (out / "link").readlink().as_posix() == "a.txt"
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "big.txt", "empty", "link", "run.sh", "sub"]


def test_new_snapshots_go_beside_old_ones_and_gc_keeps_both(v1_store, tmp_path):
    store = open_store(str(v1_store))
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(EXPECTED["a.txt"])      # a single-chunk file: same chunk in both formats
    (src / "new.bin").write_bytes(random.Random(1).randbytes(2 * 1024 * 1024))
    snap = create_snapshot(src, store, use_cache=False)
    assert json.loads(store.get_manifest(snap.id))["format"] == FORMAT
    assert json.loads((v1_store / "format").read_text())["format"] == FORMAT   # the store says what it now holds
    assert gc(store, grace_s=0)["deleted_chunks"] == 0
    assert verify(store, V1_ID) == [] and verify(store, snap.id) == []


def test_cli_verifies_and_shows_an_old_store(v1_store, tmp_path):
    ok = run_fleet(["snapshot", "verify", "v1-data", "--store", str(v1_store)], cwd=tmp_path)
    assert ok.returncode == 0 and "verified" in ok.stdout
    show = run_fleet(["snapshot", "show", "v1-data", "--json", "--store", str(v1_store)], cwd=tmp_path)
    files = {e["path"]: e["sha256"] for e in json.loads(show.stdout)["entries"] if e["type"] == "file"}
    assert files == {p: hashlib.sha256(d).hexdigest() for p, d in EXPECTED.items()}


def test_an_old_run_record_passes_audit_deep_and_a_corrupt_old_chunk_is_named(fleet_home, tmp_path):
    from fleet.records.chain import RunRecord, append_record
    store_dir = tmp_path / "store-v1"
    shutil.copytree(FIXTURE, store_dir)
    append_record(RunRecord(run_id="r-format1", command="python train.py", data_snapshots={"train": V1_ID},
                            store=str(store_dir), status="succeeded", exit_status=0))
    ok = run_fleet(["audit", "--verify", "--deep"], cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    big = next(e for e in load(open_store(str(store_dir)), V1_ID).files() if e.path == "big.txt")
    chunk = store_dir / "chunks" / big.chunks[2][0][:2] / big.chunks[2][0]
    chunk.chmod(0o644)
    chunk.write_bytes(b"rot")
    bad = run_fleet(["audit", "--verify", "--deep"], cwd=tmp_path)
    assert bad.returncode == 5 and big.chunks[2][0][:12] in bad.stderr and "big.txt" in bad.stderr
