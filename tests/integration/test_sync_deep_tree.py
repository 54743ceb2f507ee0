"""A machine's staged directory in which a run left a directory tree deeper than Python's stack (a
`cp -r . sub/` run in a loop in its code directory) is staged again: the helper on the machine
deleted what the snapshot does not hold by recursing once per level (shutil.rmtree, os.walk before
Python 3.12, its own walk), so the next sync failed on RecursionError and the next trial or attempt
never started."""
from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from fleet.snapshots import create_snapshot, open_store
from fleet.snapshots.sync import Target, sync_machine
from fleet.stage import code_dir
from tests.fixtures.deep_tree import DEPTH, deep_tree, remove



@pytest.mark.parametrize("record", ["kept", "lost"])
def test_a_code_directory_holding_a_tree_deeper_than_the_stack_is_staged_again(fleet_home, local_lease, tmp_path,
                                                                                record):
    """kept: the machine's record of the tree lets the helper patch it in place; lost: it builds the
    tree anew beside it and deletes the old one."""
    src = tmp_path / "code"
    src.mkdir()
    (src / "train.py").write_text("v1\n")
    store = open_store(None)
    v1 = create_snapshot(src, store)
    (m,) = local_lease(gpus=1).machines
    dest = Path(code_dir(m))
    sync_machine(m, store, [Target(str(dest), [v1.id], read_only=False)])
    if record == "lost":
        shutil.rmtree(Path(m.state_dir) / "materialised")
    deep_tree(dest / "sub")
    try:
        (src / "train.py").write_text("v2\n")
        sync_machine(m, store, [Target(str(dest), [create_snapshot(src, store).id], read_only=False)])
        assert sorted(p.name for p in dest.iterdir()) == ["train.py"]
        assert (dest / "train.py").read_text() == "v2\n"
    finally:   # the tree, where the old helper left it: in place, or beside it as the old tree
        for left in [dest / "sub", *dest.parent.glob(f".{dest.name}.*")]:
            remove(left)


def test_a_read_only_snapshot_holding_a_tree_deeper_than_the_stack_is_staged_locked(fleet_home, local_lease,
                                                                                     tmp_path):
    """A data directory a job wrote (a `cp -r . sub/` in a loop) snapshotted and staged read-only:
    the helper locked its directories with os.walk, which recursed once per level before Python
    3.12, so the sync failed on RecursionError."""
    src = tmp_path / "data"
    deep_tree(src / "sub")
    try:
        store = open_store(None)
        snap = create_snapshot(src, store)
        (m,) = local_lease(gpus=1).machines
        dest = Path(m.state_dir).parent / "data"
        sync_machine(m, store, [Target(str(dest), [snap.id], read_only=True)])
        bottom = dest.joinpath(*["sub"] + ["d"] * DEPTH)
        assert (bottom / "left-by-the-job").read_text() == "x"
        assert {stat.S_IMODE(d.stat().st_mode) for d in (dest, dest / "sub", bottom)} == {0o555}
    finally:
        remove(src)
        for left in [dest, *dest.parent.glob(f".{dest.name}.*")]:
            subprocess.run(["chmod", "-R", "u+w", "--", str(left)], check=False, capture_output=True)
            remove(left)
