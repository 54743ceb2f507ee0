"""A snapshot write that met a full disk as it announced itself in the store (locks/write-…) left its
marker behind, an empty file: `fleet snapshot gc`, which the "store is full" error tells the user to
run after freeing space, then refused for ten minutes: "a snapshot write is in progress on this store
(host …, pid <a process long gone> …)"."""
from __future__ import annotations

import errno
import os

import pytest

from fleet.errors import EnvironmentProblem
from fleet.snapshots import open_store
from fleet.snapshots import store_guard
from fleet.snapshots.store_guard import GcGuard, WriteGuard


def test_a_writer_that_could_not_announce_itself_leaves_no_marker_to_block_gc(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FLEET_STORE_GC_WAIT", "0")
    store = open_store(str(tmp_path / "store"))
    real_write = os.write

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_guard.os, "write", full)
    with pytest.raises(EnvironmentProblem, match="No space left on device"):
        with WriteGuard(store):
            pass
    monkeypatch.setattr(store_guard.os, "write", real_write)
    assert os.listdir(os.path.join(str(store.root), "locks")) == []
    with GcGuard(store):      # space freed: gc runs at once, not "a snapshot write is in progress"
        pass
