"""A machine's staged directory in which a run left a directory tree deeper than Python's stack (a
`cp -r . sub/` run in a loop in its code directory) is staged again: the helper on the machine
deleted what the snapshot does not hold by recursing once per level (shutil.rmtree, os.walk before
Python 3.12, its own walk), so the next sync failed on RecursionError and the next trial or attempt
never started."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fleet.snapshots import create_snapshot, open_store
from fleet.snapshots.sync import Target, sync_machine
from fleet.stage import code_dir
from tests.fixtures.deep_tree import deep_tree, remove



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
