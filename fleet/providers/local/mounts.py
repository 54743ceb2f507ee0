"""Mounts left under a machine's directory: a trial running as root can mount a tmpfs in its outputs
or bind a host directory there. They are detached before the directory is deleted, so that the
deletion neither stops at a busy mount point (leaving the machine's directory, and the mount, on the
host) nor walks into a bound host directory and deletes what is there, which is not fleet's."""
from __future__ import annotations

import os
import re

MNT_DETACH = 2          # umount2(2): detach now, let the kernel finish when the mount is no longer busy


def mounts_under(directory: str | os.PathLike, mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """Mount points at or below `directory`, deepest first."""
    root = os.path.realpath(directory).rstrip("/") + "/"
    found = set()
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as fh:
            for line in fh:
                fields = line.split(" ")
                if len(fields) > 4:
                    point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
                    if (point.rstrip("/") + "/").startswith(root):
                        found.add(point)
    except OSError:       # no /proc (not Linux): nothing can be mounted there by this provider's runs
        return []
    return sorted(found, key=len, reverse=True)


def detach_mounts_under(directory: str | os.PathLike) -> list[str]:
    """Detach every mount at or below `directory`; the mount points that stay (no right to unmount)."""
    points = mounts_under(directory)
    if not points:
        return []
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    return [p for p in points if libc.umount2(os.fsencode(p), MNT_DETACH) != 0]
