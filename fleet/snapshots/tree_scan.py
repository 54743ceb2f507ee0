"""Walking a tree for a snapshot: every path's lstat, in a stable order, excludes skipped."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import UsageError

# .fleet-snapshot: the marker older fleets left in materialised trees; never part of a snapshot.
DEFAULT_EXCLUDES = (".git", "__pycache__", ".fleet", ".venv", ".DS_Store", ".fleet-snapshot")


def scan_tree(root: str, excludes: Iterable[str] = DEFAULT_EXCLUDES) -> Iterator[tuple[str, str, os.stat_result]]:
    """(relative posix path, real path, lstat) for everything under root, sorted by directory then
    name, symlinks not followed. An exclude without "/" skips that name at any depth; one with "/"
    skips that relative path. Plain strings and one lstat per entry: this is all a re-snapshot of an
    unchanged tree costs."""
    skip = {e for e in excludes if "/" not in e}
    skip_paths = {e.strip("/") for e in excludes if "/" in e}
    stack = [("", root)]
    while stack:
        prefix, directory = stack.pop()
        try:
            with os.scandir(directory) as it:
                found = sorted((e.name, e.path, e.is_dir(follow_symlinks=False)) for e in it if e.name not in skip)
        except OSError as exc:
            raise UsageError(f"cannot read directory {directory}: {exc.strerror or exc}") from None
        subdirs = []
        for name, real, is_dir in found:
            rel = prefix + name
            if rel in skip_paths:
                continue
            try:
                st = os.lstat(real)
            except FileNotFoundError:
                continue                     # removed while we walked
            yield rel, real, st
            if is_dir and stat.S_ISDIR(st.st_mode):
                subdirs.append((rel + "/", real))
        stack.extend(reversed(subdirs))


def walk_tree(root: Path, excludes: Iterable[str] = DEFAULT_EXCLUDES) -> Iterable[tuple[str, Path, os.stat_result]]:
    return ((rel, Path(real), st) for rel, real, st in scan_tree(str(root), excludes))
