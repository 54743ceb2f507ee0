"""restore.materialise (the Python API's) over a tree deeper than Python's stack (a job's `cp -r .
sub/` run in a loop, or a checkpoint that held one): the old tree was made writable with os.walk and
deleted with shutil.rmtree, and a read-only tree's directories locked with os.walk, all recursing
once per level before Python 3.12, so materialise died on RecursionError with the old tree left."""
from __future__ import annotations

import subprocess
from pathlib import Path

from fleet.snapshots import create_snapshot, materialise, open_store
from fleet.snapshots.restore import remove_tree
from tests.fixtures.deep_tree import DEPTH, deep_tree, remove


def _cleanup(*paths: Path) -> None:
    for path in paths:
        subprocess.run(["chmod", "-R", "u+w", "--", str(path)], capture_output=True, check=False)
        remove(path)


def test_a_tree_a_job_made_deeper_than_the_stack_is_replaced(fleet_home, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text("v1\n")
    store = open_store(str(tmp_path / "store"))
    dest = tmp_path / "out"
    materialise(store, create_snapshot(src, store).id, dest)
    deep_tree(dest / "sub")
    try:
        (src / "train.py").write_text("v2\n")
        materialise(store, create_snapshot(src, store).id, dest)
        assert sorted(p.name for p in dest.iterdir()) == ["train.py"]
        assert (dest / "train.py").read_text() == "v2\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["fleet-home", "out", "src", "store"]
    finally:
        _cleanup(dest / "sub", *tmp_path.glob(".out.*"))


def test_a_snapshot_deeper_than_the_stack_is_materialised_read_only_and_removed(fleet_home, tmp_path):
    src = tmp_path / "src"
    deep_tree(src / "sub")
    dest = tmp_path / "out"
    try:
        store = open_store(str(tmp_path / "store"))
        materialise(store, create_snapshot(src, store).id, dest, read_only=True)
        bottom = dest / "sub" / Path(*["d"] * DEPTH)
        assert (bottom / "left-by-the-job").read_text() == "x"
        assert (bottom.stat().st_mode & 0o777) == 0o555 and ((dest / "sub").stat().st_mode & 0o777) == 0o555
        remove_tree(dest)
        assert not dest.exists()
    finally:
        _cleanup(src, dest, *tmp_path.glob(".out.*"))
