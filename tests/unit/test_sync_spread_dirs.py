"""The machine's host cache and each tree a sync builds are marked FS_TOPDIR_FL where the filesystem
has it (ext2/3/4), as the controller's store is: their subdirectories spread over block groups, so
creating thousands of files does not pay a scan over one group's recently freed inodes each."""
from __future__ import annotations

import fcntl
import hashlib
import io
import os
import struct

import pytest

from fleet.snapshots import remote_helper as helper
from fleet.snapshots.remote_cache import Cache

FS_IOC_GETFLAGS, FS_TOPDIR_FL = 0x80086601, 0x00020000     # linux/fs.h (chattr's +T)
END = b"0" * 64 + b"0" * 12 + b"\n"


def _flags(path) -> int | None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return struct.unpack("l", fcntl.ioctl(fd, FS_IOC_GETFLAGS, struct.pack("l", 0)))[0]
    except OSError:
        return None          # tmpfs and others: no inode flags
    finally:
        os.close(fd)


@pytest.fixture
def ext_dir(tmp_path):
    if _flags(tmp_path) is None:
        pytest.skip("the temp directory's filesystem has no inode flags (not ext2/3/4)")
    return tmp_path


def test_a_new_host_cache_and_a_built_tree_spread_their_subdirectories(ext_dir):
    cache = Cache(str(ext_dir / "cache"), None)
    assert _flags(cache.root) & FS_TOPDIR_FL
    data = b"some data"
    h = hashlib.sha256(data).hexdigest()
    cache.put(h, data)
    manifest = {"entries": [{"path": "d", "type": "dir", "mode": 0o755},
                            {"path": "d/f", "type": "file", "mode": 0o644, "size": len(data), "sha256": h,
                             "chunks": [[h, len(data)]]}]}
    target = {"dest": str(ext_dir / "data" / "root"), "ids": ["a" * 64], "read_only": True}
    helper.materialise(target, {"a" * 64: manifest}, cache, helper.Frames(io.BytesIO(END), set()))
    root = ext_dir / "data" / "root"
    assert (root / "d" / "f").read_bytes() == data
    assert _flags(root) & FS_TOPDIR_FL
    assert not _flags(root / "d") & FS_TOPDIR_FL       # the root only: the flag is not inherited


def test_where_the_flag_cannot_be_set_nothing_fails(tmp_path):
    from fleet.snapshots.remote_cache import spread_subdirs
    spread_subdirs(str(tmp_path / "missing"))            # gone: nothing to mark
    os.symlink(tmp_path, tmp_path / "link")
    spread_subdirs(str(tmp_path / "link"))               # never through a link
    if os.path.isdir("/dev/shm"):
        spread_subdirs("/dev/shm")                       # tmpfs: no inode flags
