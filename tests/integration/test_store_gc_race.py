"""A write and `fleet snapshot gc` on one store (red team): the writer found a chunk already there
(unreferenced, left by an earlier run, old enough for any --grace), did not write it, and gc then
deleted it as unreferenced, so the new manifest named a missing chunk. Writers and gc now announce
themselves with markers in the store (fleet/snapshots/store_guard.py): gc stops with one line while
a write is announced, a write waits for (or, past FLEET_STORE_GC_WAIT, fails with one line during)
a gc. The interleavings are forced with hooks between a writer's presence check and its manifest
and inside gc, never left to timing. Both stores: file:// and S3 (a moto server)."""
from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import run_fleet

from fleet.errors import EnvironmentProblem
from fleet.snapshots import create_snapshot, gc, materialise, open_store, verify
from fleet.snapshots.store_guard import MARKER_TTL_S, WriteGuard

pytestmark = pytest.mark.timeout(300)


class Kind:
    """One store under test: the store, how old its chunks are made to look, its markers."""

    def __init__(self, store, grace: float, age, markers):
        self.store, self.grace, self.age, self.markers = store, grace, age, markers


@pytest.fixture(params=["file", "s3"])
def kind(request, tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    if request.param == "file":
        root = tmp_path / "store"
        store = open_store(str(root))

        def age() -> None:              # an earlier run's chunks: two hours old, past any --grace
            old = time.time() - 7200
            for d in (root / "chunks").iterdir():
                for f in d.iterdir():
                    os.utime(f, (old, old))
        return Kind(store, 3600, age, lambda: sorted(os.listdir(root / "locks")) if (root / "locks").exists() else [])
    import boto3
    s3 = boto3.client("s3", endpoint_url=request.getfixturevalue("aws_env"))
    s3.create_bucket(Bucket="fleet-race")
    store = open_store("s3://fleet-race/p")
    # S3 keeps LastModified as written: gc with --grace 0 takes every unreferenced chunk.
    return Kind(store, 0, lambda: None,
                lambda: sorted(o["Key"] for o in s3.list_objects_v2(Bucket="fleet-race", Prefix="p/locks/")
                               .get("Contents", [])))


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "weights.bin").write_bytes(random.Random(7).randbytes(3 << 20))
    (root / "notes.txt").write_text("epoch 3\n")
    return root


def _leftover(kind: Kind, tree: Path) -> str:
    """Chunks an earlier run left: its snapshot's manifest is gone, the chunks stay, unreferenced."""
    first = create_snapshot(tree, kind.store, use_cache=False)
    kind.store.delete_manifest(first.id)
    kind.age()
    return first.id


def _hook(monkeypatch, obj, method: str):
    """Pause the first call of obj.method until `go` is set; `reached` says it is paused there."""
    reached, go, original = threading.Event(), threading.Event(), getattr(obj, method)
    calls = []

    def paused(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            reached.set()
            assert go.wait(120), "the test never let the paused call go on"
        return original(*args, **kwargs)
    monkeypatch.setattr(obj, method, paused)
    return reached, go


def _background(fn):
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 — the test looks at it
            out["error"] = exc
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_gc_while_a_write_is_between_its_presence_check_and_its_manifest_stops_and_deletes_nothing(
        kind, tree, tmp_path, monkeypatch):
    old_id = _leftover(kind, tree)
    reached, go = _hook(monkeypatch, kind.store, "put_manifest")     # after every presence check
    writer, out = _background(lambda: create_snapshot(tree, kind.store, use_cache=False))
    try:
        assert reached.wait(120), out.get("error")
        with pytest.raises(EnvironmentProblem) as err:
            gc(kind.store, grace_s=kind.grace)
        line = err.value.one_line()
        assert "a snapshot write is in progress on this store" in line and "try again later" in line
        assert "\n" not in line
    finally:
        go.set()
        writer.join(120)
    assert "error" not in out, out.get("error")
    snap = out["value"]
    assert snap.id == old_id and snap.new_chunks == 0          # the leftover chunks were trusted, not rewritten
    assert verify(kind.store, snap.id) == []
    restored = materialise(kind.store, snap.id, tmp_path / "restored")
    assert (restored / "weights.bin").read_bytes() == (tree / "weights.bin").read_bytes()
    assert kind.markers() == []                               # the writer took its marker back
    assert gc(kind.store, grace_s=kind.grace)["deleted_chunks"] == 0   # now it runs, and keeps them
    assert verify(kind.store, snap.id) == [] and kind.markers() == []


def test_a_write_during_gc_fails_with_one_line_and_works_once_gc_is_done(kind, tree, tmp_path, monkeypatch):
    _leftover(kind, tree)
    monkeypatch.setenv("FLEET_STORE_GC_WAIT", "0")             # do not wait for the gc: say so
    reached, go = _hook(monkeypatch, kind.store, "delete_chunk")     # gc has decided what to delete
    collector, out = _background(lambda: gc(kind.store, grace_s=kind.grace))
    try:
        assert reached.wait(120), out.get("error")
        with pytest.raises(EnvironmentProblem) as err:
            create_snapshot(tree, kind.store, use_cache=False)
        line = err.value.one_line()
        assert "is being garbage-collected" in line and "try again later" in line and "\n" not in line
    finally:
        go.set()
        collector.join(120)
    assert "error" not in out, out.get("error")
    assert out["value"]["deleted_chunks"] > 0                 # gc went on and freed the leftovers
    snap = create_snapshot(tree, kind.store, use_cache=False)  # after it: the chunks are written again
    assert snap.new_chunks > 0 and verify(kind.store, snap.id) == []
    assert kind.markers() == []


def test_a_write_that_meets_a_gc_waits_for_it_and_then_writes_what_gc_deleted(tree, tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    store = open_store(str(tmp_path / "store"))
    kind = Kind(store, 0, lambda: None, lambda: [])
    _leftover(kind, tree)
    reached, go = _hook(monkeypatch, store, "delete_chunk")
    collector, gc_out = _background(lambda: gc(store, grace_s=0))
    assert reached.wait(120)
    writer, out = _background(lambda: create_snapshot(tree, store, use_cache=False))
    writer.join(2)
    assert writer.is_alive() and "error" not in out             # waiting for the gc, not refused
    go.set()
    collector.join(120)
    writer.join(120)
    assert "error" not in out and "error" not in gc_out, (out, gc_out)
    assert out["value"].new_chunks > 0 and verify(store, out["value"].id) == []


def test_gc_from_the_cli_names_the_write_in_one_line_and_a_crashed_writers_marker_expires(tmp_path):
    root = tmp_path / "store"
    store = open_store(str(root))
    env = {"FLEET_HOME": str(tmp_path / "home")}
    live = WriteGuard(store)
    live.begin()                                               # a write under way (this process)
    try:
        proc = run_fleet(["snapshot", "gc", "--store", str(root)], cwd=tmp_path, env=env)
        assert proc.returncode != 0
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "a snapshot write is in progress on this store" in lines[0], proc.stderr
        assert f"pid {os.getpid()}" in lines[0] and "try again later" in lines[0]
    finally:
        live.end()
    # A writer that crashed left its marker: past twice the TTL it neither blocks gc nor stays.
    crashed = root / "locks" / f"write-{time.time_ns()}-deadhost-4242-00ff00ff"
    crashed.write_text("")
    old = time.time() - 2 * MARKER_TTL_S - 60
    os.utime(crashed, (old, old))
    proc = run_fleet(["snapshot", "gc", "--store", str(root)], cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert os.listdir(root / "locks") == []
