"""A checkpoint directory in which the job left a tree deeper than Python's stack (a `cp -r . sub/`
run in a loop): the helper on the machine listed it with os.walk, which recursed once per level
before Python 3.12, so the upload failed on RecursionError (the run's output warned with the tail
of a traceback), the checkpoint was never uploaded and a sweep trial's directory never removed."""
from __future__ import annotations

import os
from pathlib import Path

from fleet.run.checkpoints import Checkpointer, checkpoint_dir, prepare
from fleet.snapshots import open_store
from fleet.snapshots.catalog import load
from tests.fixtures.deep_tree import DEPTH, deep_tree, remove


def _finish(lease, store, run_id: str) -> tuple[list, list[str]]:
    """The last upload of a sweep trial (it removes the directory once sent), and the run's warnings."""
    warned: list[str] = []
    ups = Checkpointer(lease, store, run_id, 0, warned.append, remove_at_finish=True).finish()
    return ups, warned


def test_a_checkpoint_deeper_than_the_stack_is_uploaded_and_removed(local_lease, fleet_home, tmp_path):
    lease = local_lease(gpus=1)
    [m] = lease.machines
    store = open_store(str(tmp_path / "store"))
    prepare(lease, store, "r-deep", None)
    ckpt = Path(checkpoint_dir(m, "r-deep"))
    (ckpt / "model.bin").write_bytes(b"weights")
    deep_tree(ckpt / "sub")
    try:
        ups, warned = _finish(lease, store, "r-deep")
        assert warned == []
        [up] = ups
        files = {e.path: e.size for e in load(store, up.snapshot_id).files()}
        assert files == {"model.bin": 7, "sub/" + "d/" * DEPTH + "left-by-the-job": 1}
        assert not ckpt.exists()
    finally:
        remove(ckpt)


def test_a_path_too_long_to_open_fails_the_upload_in_one_clear_line(local_lease, fleet_home, tmp_path):
    lease = local_lease(gpus=1)
    [m] = lease.machines
    store = open_store(str(tmp_path / "store"))
    prepare(lease, store, "r-deeper", None)
    ckpt = Path(checkpoint_dir(m, "r-deeper"))
    (ckpt / "model.bin").write_bytes(b"weights")
    os.mkfifo(ckpt / "a-fifo")                   # its "not checkpointed" line comes first, on the same stderr
    deep_tree(ckpt / "sub", depth=2100)          # 4,200 characters of d/d/…: past PATH_MAX
    try:
        ups, warned = _finish(lease, store, "r-deeper")
        assert ups == []
        [line] = warned
        assert line.startswith("checkpoint of node 0 not uploaded (") and "\n" not in line and len(line) < 500
        assert "levels deep in it is too long for the filesystem (File name too long)); " \
               "the previous one stays the latest" in line
        assert ckpt.exists()         # not removed: nothing of it was uploaded
    finally:
        remove(ckpt)
