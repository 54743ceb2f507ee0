"""Opening a file that someone else may have replaced: only a regular file, never through a link,
never blocking (a FIFO put in its place would hang the open for ever, a link to /dev/zero be read
without end). The machine's agent has its own copy (remote/agent/containment.read_small): it is
shipped standard library only."""
from __future__ import annotations

import errno
import os
import stat

NOT_REGULAR = "not a regular file"


def kind_of(mode: int) -> str:
    """What stands where a regular file was expected, in words."""
    for test, word in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device")):
        if test(mode):
            return word
    return "not a regular file"


# What open_regular (and opening with O_NOFOLLOW | O_NONBLOCK) raises for a path that is there but is no
# regular file: a link, anything but a file (EINVAL), a FIFO or socket with no peer, a device, a directory.
NOT_REGULAR_ERRNOS = frozenset({errno.ELOOP, errno.EINVAL, errno.ENXIO, errno.ENODEV, errno.EISDIR})


def open_regular(path: str | os.PathLike, *, follow_links: bool = False) -> int:
    """A read-only descriptor of `path`; OSError with ELOOP for a link (unless `follow_links`),
    EINVAL for anything but a regular file (the descriptor is closed then)."""
    fd = os.open(path, os.O_RDONLY | (0 if follow_links else os.O_NOFOLLOW) | os.O_NONBLOCK | os.O_CLOEXEC)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{NOT_REGULAR} ({kind_of(mode)})")
    return fd


def read_regular(path: str | os.PathLike, limit: int) -> bytes:
    """At most `limit` + 1 bytes of a regular file; b"" for a FIFO, device or link in its place (a
    caller that checks a hash then names it damaged, instead of hanging or filling memory).
    FileNotFoundError when there is none."""
    try:
        fd = open_regular(path)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise
        return b""
    with os.fdopen(fd, "rb") as handle:
        return handle.read(limit + 1)


CONFIG_LIMIT = 16 * 1024 * 1024   # a fleet.toml (or a stack's outputs file) is text of kilobytes


def read_config_file(path: str | os.PathLike, limit: int = CONFIG_LIMIT) -> bytes:
    """A configuration file's bytes, through a link if it is one (a team's shared fleet.toml), but
    only a regular file, opened without blocking and read to at most `limit` bytes: a FIFO in its
    place hung every command that peeks at it, a link to /dev/zero filled memory. OSError (EINVAL:
    not a regular file; EFBIG: larger than `limit`)."""
    with os.fdopen(open_regular(path, follow_links=True), "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit // (1024 * 1024)} MiB")
    return data
