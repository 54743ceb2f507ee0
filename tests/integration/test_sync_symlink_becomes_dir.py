"""The issue 13 reproduction through a real sync onto a machine: a snapshot commits `sub -> /elsewhere`,
the next one replaces it by a directory `sub/` with files. Syncing the second onto the machine that
holds the first (patched in place, or rebuilt) writes inside the data root only: /elsewhere is never
touched, and `sub` ends a real directory."""
from __future__ import annotations

import os

import pytest

from fleet.snapshots import create_snapshot, open_store
from fleet.snapshots.sync import Target, sync_machine
from fleet.snapshots.sync_remote import data_dir


@pytest.mark.parametrize("read_only", [True, False])
def test_a_committed_symlink_replaced_by_a_directory_never_writes_through_it(fleet_home, local_lease, tmp_path,
                                                                            read_only):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "x.txt").write_text("precious\n")
    src = tmp_path / "d"
    src.mkdir()
    (src / "keep.txt").write_text("kept\n")
    (src / "sub").symlink_to(elsewhere)                       # absolute, pointing out of the tree
    store = open_store(None)
    v1 = create_snapshot(src, store)
    (m,) = local_lease(gpus=1).machines
    dest = data_dir(m, "d")
    sync_machine(m, store, [Target(dest, [v1.id], read_only=read_only)])
    assert os.readlink(f"{dest}/sub") == str(elsewhere)
    root_inode = os.stat(dest).st_ino

    (src / "sub").unlink()
    (src / "sub").mkdir()
    (src / "sub" / "x.txt").write_text("overwritten?\n")       # the name the outside file has
    (src / "sub" / "new.txt").write_text("new\n")
    v2 = create_snapshot(src, store)
    sync_machine(m, store, [Target(dest, [v2.id], read_only=read_only)])

    assert sorted(os.listdir(elsewhere)) == ["x.txt"] and (elsewhere / "x.txt").read_text() == "precious\n"
    assert not os.path.islink(f"{dest}/sub") and os.path.isdir(f"{dest}/sub")
    assert open(f"{dest}/sub/x.txt").read() == "overwritten?\n" and open(f"{dest}/sub/new.txt").read() == "new\n"
    assert open(f"{dest}/keep.txt").read() == "kept\n"
    if read_only:   # a read-only target is patched where it stands (the path that creates components itself)
        assert os.stat(dest).st_ino == root_inode
