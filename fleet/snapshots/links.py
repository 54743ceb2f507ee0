"""Symlinks that lead out of the tree they are in: a snapshot keeps the link, not what it names, so
whatever the target holds when the link is read is what a run reads (a rerun too)."""
from __future__ import annotations

import posixpath
import re
from typing import Iterable

from .manifest import Entry


def leaves_tree(path: str, target: str) -> bool:
    """Whether the link at `path` (relative to the tree's root) names something outside the tree: an
    absolute target, or `..` climbing above the root. Read lexically, as the link would be on a
    machine where the tree is all there is."""
    if posixpath.isabs(target):
        return True
    where = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    return where == ".." or where.startswith("../")


def outside_links(entries: Iterable[Entry], what: str, shown: int = 3) -> list[str]:
    """One line for each of the first `shown` links out of the tree, then a count of the rest."""
    out = [e for e in entries if e.type == "symlink" and leaves_tree(e.path, e.target or "")]
    lines = [f"{e.path} is a link to {e.target}, outside {what}: its target is not pinned (what it holds "
             "when read is what runs)" for e in out[:shown]]
    return lines + ([f"(+{len(out) - shown} more links to targets outside {what})"] if len(out) > shown else [])


# Files that usually hold credentials: copied with the code or data they go to the store (perhaps a
# team's bucket) and onto every machine, so the user is told which ones went.
_SECRET_FILE = re.compile(r"(^|/)(\.env(\.[^/]*)?|\.netrc|\.pgpass|id_(rsa|ecdsa|ed25519|dsa)|[^/]*credentials[^/]*"
                          r"|[^/]*service[-_]?account[^/]*\.json|[^/]*\.(pem|key|p12|pfx))$", re.IGNORECASE)
_EXAMPLE_FILE = re.compile(r"\.(example|sample|template|dist)$", re.IGNORECASE)


def secret_files_note(paths: list[str], advice: str = "move them out, or git-ignore them") -> str:
    found = sorted(p for p in paths if _SECRET_FILE.search(p) and not _EXAMPLE_FILE.search(p))
    if not found:
        return ""
    shown = ", ".join(found[:5]) + (f" (+{len(found) - 5} more)" if len(found) > 5 else "")
    return f"files that usually keep credentials ({shown}), now in the store and on every machine: {advice}"
