"""Materialising a snapshot on a machine never writes, or deletes, through a symlink the snapshot
itself put down: `sub -> /elsewhere` followed by `sub/x` must not touch /elsewhere (issue 13)."""
from __future__ import annotations

import hashlib
import io
import os

import pytest

from fleet.snapshots import remote_helper as helper
from fleet.snapshots.remote_cache import Cache, Failure

END = b"0" * 64 + b"0" * 12 + b"\n"


def _file(path: str, data: bytes, cache: Cache) -> dict:
    h = hashlib.sha256(data).hexdigest()
    cache.put(h, data)
    return {"path": path, "type": "file", "mode": 0o644, "size": len(data), "sha256": h, "chunks": [[h, len(data)]]}


@pytest.fixture
def world(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "x").write_bytes(b"precious")
    cache = Cache(str(tmp_path / "cache"), None)
    return tmp_path, outside, cache


def _materialise(tmp_path, manifests, cache, read_only=False):
    target = {"dest": str(tmp_path / "data" / "root"), "ids": list(manifests), "read_only": read_only}
    helper.materialise(target, manifests, cache, helper.Frames(io.BytesIO(END), set()))
    return tmp_path / "data" / "root"


def _untouched(outside):
    assert sorted(os.listdir(outside)) == ["x"] and (outside / "x").read_bytes() == b"precious"


@pytest.mark.parametrize("read_only", [False, True])
def test_a_file_under_a_symlink_entry_is_refused_and_nothing_outside_changes(world, read_only):
    tmp_path, outside, cache = world
    manifest = {"entries": [{"path": "sub", "type": "symlink", "target": str(outside)},
                            _file("sub/x", b"evil", cache), _file("sub/new", b"evil", cache)]}
    with pytest.raises(Failure, match=r"sub/new: sub is a symlink or a file in the snapshot, not a directory; "
                                      r"refusing to write through it"):
        _materialise(tmp_path, {"a" * 64: manifest}, cache, read_only)
    _untouched(outside)
    assert not (tmp_path / "data" / "root").exists()
    assert [p for p in os.listdir(tmp_path / "data") if "partial" in p] == []     # the partial tree is gone


def test_a_symlink_to_a_file_cannot_be_used_as_a_directory_either(world):
    tmp_path, outside, cache = world
    manifest = {"entries": [{"path": "f", "type": "symlink", "target": str(outside / "x")},
                            _file("f/y", b"evil", cache)]}
    with pytest.raises(Failure, match="f/y: f is a symlink"):
        _materialise(tmp_path, {"a" * 64: manifest}, cache)
    _untouched(outside)


def test_deleting_under_a_symlink_entry_removes_nothing_outside(world):
    tmp_path, outside, cache = world
    base = {"entries": [{"path": "sub", "type": "symlink", "target": str(outside)}, _file("keep", b"k", cache)]}
    overlay = {"entries": [], "deleted": ["sub/x"]}
    root = _materialise(tmp_path, {"a" * 64: base, "b" * 64: overlay}, cache)
    _untouched(outside)
    assert os.readlink(root / "sub") == str(outside) and (root / "keep").read_bytes() == b"k"


def test_an_overlay_may_turn_a_symlink_into_a_real_directory(world):
    tmp_path, outside, cache = world
    base = {"entries": [{"path": "sub", "type": "symlink", "target": str(outside)}]}
    overlay = {"entries": [{"path": "sub", "type": "dir", "mode": 0o755}, _file("sub/x", b"mine", cache)]}
    root = _materialise(tmp_path, {"a" * 64: base, "b" * 64: overlay}, cache)
    _untouched(outside)
    assert not (root / "sub").is_symlink() and (root / "sub" / "x").read_bytes() == b"mine"


def test_ordinary_trees_still_materialise(world):
    tmp_path, _outside, cache = world
    manifest = {"entries": [{"path": "a", "type": "dir", "mode": 0o755}, _file("a/b/c", b"1", cache),
                            _file("a-b", b"2", cache), _file("a/d", b"3", cache),
                            {"path": "a/l", "type": "symlink", "target": "d"}, _file("z", b"", cache)]}
    root = _materialise(tmp_path, {"a" * 64: manifest}, cache, read_only=True)
    assert (root / "a" / "b" / "c").read_bytes() == b"1" and (root / "a-b").read_bytes() == b"2"
    assert (root / "a" / "l").read_bytes() == b"3" and (root / "z").read_bytes() == b""
    # Which snapshot the tree holds is recorded beside the cache, not as a file inside the tree.
    assert not (root / ".fleet-snapshot").exists()
    assert helper.is_current({"dest": str(root), "ids": ["a" * 64], "sizes": {"a/b/c": 1, "z": 0}})
    assert not helper.is_current({"dest": str(root), "ids": ["b" * 64]})
