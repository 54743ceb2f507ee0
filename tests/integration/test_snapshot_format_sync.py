"""Snapshots of both store formats sync onto real local sshd machines, and the trees fleet puts there
carry no marker file: which snapshot a tree holds is recorded in the machine's fleet state dir."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from fleet.snapshots import create_snapshot, load, open_store
from fleet.snapshots.sync import Target, sync_lease
from fleet.snapshots.sync_remote import data_dir

FIXTURE = Path(__file__).parents[1] / "unit" / "data" / "snapshot_store_v1"
V1_ID = "de456a4aaa2afa9f614ff08abe31d946bab30185bab90d8251981e5f931c7645"


def test_old_and_new_format_snapshots_sync_without_markers(fleet_home, local_lease, tmp_path):
    store_dir = tmp_path / "store"
    shutil.copytree(FIXTURE, store_dir)
    store = open_store(str(store_dir))
    src = tmp_path / "new"
    src.mkdir()
    (src / "x.txt").write_text("new format\n")
    new = create_snapshot(src, store)
    lease = local_lease(gpus=1)
    m = lease.machines[0]

    def targets(_m):
        return [Target(data_dir(m, "old"), [V1_ID], read_only=True), Target(data_dir(m, "new"), [new.id], read_only=True)]
    first = sync_lease(lease.machines, store, targets)
    old_dir, new_dir = Path(data_dir(m, "old")), Path(data_dir(m, "new"))
    big = next(e for e in load(store, V1_ID).files() if e.path == "big.txt")
    assert first[0].bytes_sent > 0 and (old_dir / "big.txt").stat().st_size == big.size
    assert (old_dir / "a.txt").read_bytes() == b"hello v1\n" and (new_dir / "x.txt").read_text() == "new format\n"
    assert sorted(os.listdir(old_dir)) == ["a.txt", "big.txt", "empty", "link", "run.sh", "sub"]
    assert os.listdir(new_dir) == ["x.txt"]
    # a no-op re-sync still knows both trees are current, from the records in the state dir
    again = sync_lease(lease.machines, store, targets)
    assert again[0].bytes_sent == 0 and sorted(again[0].targets_current) == sorted([str(old_dir), str(new_dir)])
    assert len(os.listdir(Path(m.state_dir) / "materialised")) == 2


def test_a_tree_with_an_old_marker_is_rebuilt_without_it(fleet_home, local_lease, tmp_path):
    store = open_store(None)
    src = tmp_path / "d"
    src.mkdir()
    (src / "f.txt").write_text("data\n")
    snap = create_snapshot(src, store)
    lease = local_lease(gpus=1)
    m = lease.machines[0]
    dest = Path(data_dir(m, "train"))
    dest.mkdir(parents=True)
    (dest / "f.txt").write_text("data\n")
    (dest / ".fleet-snapshot").write_text(snap.id + "\n")      # what an older fleet left behind
    stats = sync_lease(lease.machines, store, lambda _m: [Target(str(dest), [snap.id], read_only=True)])
    assert stats[0].targets_current == []                        # the old marker is not trusted
    assert os.listdir(dest) == ["f.txt"]
