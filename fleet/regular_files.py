"""Opening a file that someone else may have replaced: only a regular file, never through a link,
never blocking (a FIFO put in its place would hang the open for ever, a link to /dev/zero be read
without end). The machine's agent has its own copy (remote/agent/containment.read_small): it is
shipped standard library only."""
from __future__ import annotations

import errno
import os
import stat

NOT_REGULAR = "not a regular file (a FIFO, socket or device)"


def open_regular(path: str | os.PathLike) -> int:
    """A read-only descriptor of `path`; OSError with ELOOP for a link, EINVAL for anything but a
    regular file (the descriptor is closed then)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, NOT_REGULAR)
    return fd


MAX_CHUNK_BYTES = 64 * 1024 * 1024     # no snapshot store format's chunk is larger


def read_chunk_file(path: str | os.PathLike) -> bytes:
    """A store's chunk file, read as a writer of a shared store may have left it: a FIFO or a link
    (to /dev/zero) reads as b"", a file past any chunk's size as its first bytes, so the sha256 every
    reader checks names it corrupt instead of hanging or filling memory. FileNotFoundError when
    there is none."""
    try:
        fd = open_regular(path)
    except FileNotFoundError:
        raise
    except OSError:
        return b""
    with os.fdopen(fd, "rb") as handle:
        return handle.read(MAX_CHUNK_BYTES + 1)
