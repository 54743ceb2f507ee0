"""Mounts a run left under a directory fleet deletes (a machine's directory, a trial's outputs): a
run as root can mount a tmpfs there or bind a host directory. They are detached before the deletion,
which otherwise walked into a bound host directory and deleted what is there (not fleet's), and
stopped at busy mount points, leaving the directory and the mount behind.

Standard library only, annotations as strings and no `from __future__`: the sweep's reset snippet,
a team host's release and the Slurm node step carry this text to machines (fleet/sweep/reset.py,
providers/ssh/machine_agent.py, providers/slurm/steps.py), whose python may be older than fleet's."""
import errno
import os
import re

MNT_DETACH = 2          # umount2(2): detach now, let the kernel finish when the mount is no longer busy


def mounts_under(directory: "str | os.PathLike[str]", mountinfo: str = "/proc/self/mountinfo",
                 strict: bool = False) -> "list[str]":
    """Mount points at or below `directory`, deepest first. None below a link: deleting a link
    removes the link alone, and its target (a trial's outputs linked to a host directory) holds
    mounts that are not the run's, which were detached for the whole host."""
    if os.path.islink(directory):
        return []
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
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):     # no /proc (not Linux): no mount to find
            return []
        if strict:   # the caller tries again (alone, once descriptors are free) rather than leave it
            raise
        # Unread (out of descriptors: a release stops machines side by side) is not "no mount": the
        # directory itself counts as one that may stay, so it is left rather than deleted through a bind.
        return [root.rstrip("/") or "/"]
    return sorted(found, key=len, reverse=True)


def detach_mounts_under(directory: "str | os.PathLike[str]", strict: bool = False) -> "list[str]":
    """Detach every mount at or below `directory`; the mount points that stay (no right to unmount).
    strict: a mount table or libc that cannot be read raises, instead of every point counting as one
    that stays."""
    points = mounts_under(directory, strict=strict)
    if not points:
        return []
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
    except (ImportError, OSError):     # ctypes unloadable (out of descriptors too): every one stays
        if strict:
            raise
        return points
    return [p for p in points if libc.umount2(os.fsencode(p), MNT_DETACH) != 0]


def source() -> str:
    """This module's text, which the scripts that run on machines carry (fleet's own side only)."""
    with open(__file__, encoding="utf-8") as fh:
        return fh.read()
