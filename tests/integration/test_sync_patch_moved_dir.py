"""A run between two syncs moved a directory of its read-only data elsewhere and left a link in its
place (`mv data/sub /scratch/sub && ln -s /scratch/sub data/sub`, out of space). The files under the
link still look untouched by path (same inode, size, mtime), but they are not in the tree: the
patch took them as kept, removed the link and left the directory empty."""
from __future__ import annotations

import os
import shutil

from fleet.snapshots import create_snapshot, open_store
from fleet.snapshots.sync import Target, sync_machine
from fleet.snapshots.sync_remote import data_dir


def test_a_directory_moved_out_behind_a_link_is_rebuilt_whole(fleet_home, local_lease, tmp_path):
    src = tmp_path / "d"
    (src / "sub").mkdir(parents=True)
    for i in range(5):
        (src / "sub" / f"f{i}.txt").write_text(f"file {i}\n")
    (src / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    (src / "top.txt").write_text("v1\n")
    store = open_store(None)
    v1 = create_snapshot(src, store)
    (m,) = local_lease(gpus=1).machines
    dest = data_dir(m, "d")
    sync_machine(m, store, [Target(dest, [v1.id], read_only=True)])

    outside = tmp_path / "scratch-sub"
    os.chmod(dest, 0o755)
    shutil.move(f"{dest}/sub", outside)               # a rename: the files keep inode, size, mtime
    os.symlink(outside, f"{dest}/sub")
    os.chmod(dest, 0o555)

    (src / "top.txt").write_text("v2\n")
    v2 = create_snapshot(src, store)
    sync_machine(m, store, [Target(dest, [v2.id], read_only=True)])
    assert not os.path.islink(f"{dest}/sub")
    assert sorted(os.listdir(f"{dest}/sub")) == [f"f{i}.txt" for i in range(5)]
    assert open(f"{dest}/sub/f3.txt").read() == "file 3\n"
    assert open(f"{dest}/top.txt").read() == "v2\n"
    assert sorted(os.listdir(outside)) == [f"f{i}.txt" for i in range(5)]     # theirs, left alone
