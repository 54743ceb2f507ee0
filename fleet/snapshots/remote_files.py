"""File primitives of the sync helper (stdlib only; the first part of the helper's text, ahead of
remote_cache.py): whole writes, atomic replacement, in-kernel copies, hashing a file, and spreading
a new directory's subdirectories over the disk."""
import hashlib
import os

_FS_IOC_GETFLAGS, _FS_IOC_SETFLAGS, _FS_TOPDIR_FL = 0x80086601, 0x40086602, 0x00020000


def spread_subdirs(path):
    """Mark a new directory FS_TOPDIR_FL (ext2/3/4; best effort, nothing elsewhere), as the store's
    chunks/ is (local_store._fan_out): its subdirectories go to different block groups, each file's
    inode beside its own directory's. Created all in one group, thousands of files each paid a scan
    over that group's recently freed inodes (a host whose cache was trimmed, or whose last lease's
    tree was removed): 0.25 ms a file here against 0.05 ms spread."""
    try:
        import fcntl
        import struct
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0))
    except (ImportError, OSError):
        return
    try:
        flags = struct.unpack("l", fcntl.ioctl(fd, _FS_IOC_GETFLAGS, struct.pack("l", 0)))[0]
        if not flags & _FS_TOPDIR_FL:
            fcntl.ioctl(fd, _FS_IOC_SETFLAGS, struct.pack("l", flags | _FS_TOPDIR_FL))
    except OSError:
        pass
    finally:
        os.close(fd)


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def hash_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def clone(fd_in, fd_out):
    """fd_out := fd_in's bytes: a reflink where the filesystem shares extents, else copy_file_range."""
    try:
        import fcntl
        fcntl.ioctl(fd_out, 0x40049409, fd_in)         # FICLONE
        return
    except (ImportError, OSError):
        pass
    size = os.fstat(fd_in).st_size
    off = 0
    try:
        while off < size:
            n = os.copy_file_range(fd_in, fd_out, size - off, off, off)
            if n == 0:
                break
            off += n
        return
    except (AttributeError, OSError):
        pass
    import shutil
    os.lseek(fd_in, off, 0)
    os.lseek(fd_out, off, 0)
    shutil.copyfileobj(os.fdopen(fd_in, "rb", closefd=False), os.fdopen(fd_out, "wb", closefd=False))


def write_atomic(path, data, mode=0o444):
    """`path` appears whole or not at all (temp name unique per process, then rename)."""
    tmp = "%s.tmp%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        write_all(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)
