"""restore.materialise called again for the snapshot a tree already holds: its record under
$FLEET_HOME named only the tree's path, directory and snapshot, so a tree changed since (a file
edited, removed or added, the tree made writable) was returned as the snapshot. The record now holds
every name's stamp: an untouched tree is still returned as it is, one that no longer matches is rebuilt."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from fleet.snapshots import create_snapshot, file_hashes, materialise, open_store


def _tree(root: Path) -> dict[str, str]:
    """Every name under root: a file's sha256, "dir" for a directory."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*")}


def _edit_same_size_keeping_mtime(dest: Path) -> None:
    f = dest / "sub" / "model.bin"
    st = f.stat()
    f.write_bytes(b"W" * st.st_size)                     # as `rsync -t` leaves it: same size, same mtime
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))


def _make_writable(dest: Path) -> None:
    for p in [dest, *dest.rglob("*")]:
        p.chmod(p.stat().st_mode | 0o200)


CHANGES = {
    "edited": lambda dest: (dest / "train.py").write_text("print('changed')\n"),
    "edited, same size": lambda dest: (dest / "train.py").write_text("print('HELLO')\n"),
    "edited, size and mtime kept": _edit_same_size_keeping_mtime,
    "removed": lambda dest: (dest / "sub" / "model.bin").unlink(),
    "added": lambda dest: (dest / "sub" / "extra.txt").write_text("left over\n"),
    "added directory": lambda dest: (dest / "__pycache__").mkdir(),
    "made writable": _make_writable,
}


@pytest.fixture
def snapshot(fleet_home, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "train.py").write_text("print('hello')\n")
    (src / "sub" / "model.bin").write_bytes(b"w" * 4096)
    store = open_store(str(tmp_path / "store"))
    return store, create_snapshot(src, store).id


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_tree_changed_since_it_was_materialised_is_rebuilt_on_the_next_call(snapshot, tmp_path, change):
    store, sid = snapshot
    dest = tmp_path / "out"
    read_only = change == "made writable"      # the others need a tree they can change
    materialise(store, sid, dest, read_only=read_only)
    inodes = {p: p.stat().st_ino for p in dest.rglob("*")}
    assert materialise(store, sid, dest, read_only=read_only) == dest
    assert {p: p.stat().st_ino for p in dest.rglob("*")} == inodes      # untouched: returned as it is
    CHANGES[change](dest)
    materialise(store, sid, dest, read_only=read_only)
    assert _tree(dest) == {"sub": "dir", **file_hashes(store, sid)}
    if read_only:
        assert [p for p in [dest, *dest.rglob("*")] if p.stat().st_mode & 0o222] == []
