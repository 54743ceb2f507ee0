"""Snapshotting from a run in a worker thread whose main thread ended (a library caller's script):
the hashing pool, the upload pool and the store's flush took no more work ("cannot schedule new
futures after interpreter shutdown") and the create died. The snapshot is made all the same, every
file in it, and verifying it reads every chunk."""
from __future__ import annotations

import concurrent.futures.thread as executor_thread
import random
import threading

import pytest

import fleet.snapshots.create as create_mod
from fleet.snapshots import create_snapshot, materialise, open_store, verify


@pytest.mark.timeout(120)
@pytest.mark.parametrize("threads_start", [True, False], ids=["threads-start", "no-thread-starts"])
def test_a_snapshot_is_created_once_pools_take_no_more_work(tmp_path, monkeypatch, threads_start):
    """no-thread-starts: Python 3.12 also refuses new threads at shutdown, so the refused work runs in
    the calling thread, which must not then wait on a lock it holds itself (the upload hung for ever)."""
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    rng = random.Random(5)
    root = tmp_path / "data"
    root.mkdir()
    for i in range(20):
        (root / f"f{i:02d}.bin").write_bytes(rng.randbytes(rng.randint(1, 50_000)))
    (root / "big.bin").write_bytes(rng.randbytes(2 * 1024 * 1024))
    store = open_store(str(tmp_path / "store"))
    store.parallel = 4                                  # uploads overlap hashing, as for a remote store
    monkeypatch.setattr(create_mod, "SPLIT_MIN", 1024 * 1024)   # big.bin: hashed by two threads
    monkeypatch.setattr(executor_thread, "_shutdown", True)   # what interpreter shutdown sets
    if not threads_start:
        start = threading.Thread.start

        def refused(thread):
            if thread.name == "fleet-parallel":
                raise RuntimeError("can't create new thread at interpreter shutdown")
            return start(thread)
        monkeypatch.setattr(threading.Thread, "start", refused)
    snap = create_snapshot(root, store, name="at-exit", workers=4, use_cache=False)
    assert verify(store, snap.id) == []
    out = materialise(store, snap.id, tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in root.iterdir())
    assert all((out / p.name).read_bytes() == p.read_bytes() for p in root.iterdir())
    assert store.get_ref("at-exit") == snap.id
