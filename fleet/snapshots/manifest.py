"""Manifests: the canonical description of a snapshot, whose sha256 is the snapshot id.

Canonical bytes: JSON with sorted keys, no whitespace, ASCII only, entries sorted by path. Nothing
time- or machine-dependent goes in (no mtimes, owners, names), so the same tree always gives the
same id. Modes are normalised like git (0o755 if any execute bit, else 0o644) for the same reason.

`format` says how the chunk boundaries were cut (1: the old pure-Python chunker, 2: FastCDC with
1 MiB average chunks, 3: FastCDC with 256 KiB ones; see `chunking`). All are read; a manifest keeps its own format when re-serialised, so an old snapshot's
bytes, and hence its id, never change.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import IntegrityError
from .store import HEX64

FORMAT = 3
READABLE_FORMATS = (1, 2, 3)


FILE_MODES = (0o644, 0o755)   # remote_tree.py, sent to machines as stdlib text, keeps its own copy


def normal_mode(mode: int) -> int:
    return 0o755 if mode & 0o111 else 0o644


@dataclass(frozen=True)
class Entry:
    path: str                      # posix, relative, no "..", no leading "/"
    type: str                      # "file" | "dir" | "symlink"
    mode: int = 0o644
    size: int = 0
    sha256: str = ""               # whole-file hash (files)
    chunks: tuple[tuple[str, int], ...] = ()   # (chunk sha256, length) in order (files)
    target: str = ""               # symlinks

    def to_json(self) -> dict[str, Any]:
        if self.type == "file":
            return {"path": self.path, "type": "file", "mode": self.mode, "size": self.size,
                    "sha256": self.sha256, "chunks": [[h, n] for h, n in self.chunks]}
        if self.type == "symlink":
            return {"path": self.path, "type": "symlink", "target": self.target}
        return {"path": self.path, "type": "dir", "mode": self.mode}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Entry":
        entry = cls(path=d["path"], type=d["type"], mode=int(d.get("mode", 0o644)), size=int(d.get("size", 0)),
                    sha256=d.get("sha256", ""), chunks=tuple((h, int(n)) for h, n in d.get("chunks", ())),
                    target=d.get("target", ""))
        # Every hash names a file in a store or a cache: one that is not a sha256 in hex (a manifest
        # anyone who can write a shared store may plant) would name a path instead.
        check_relpath(entry.path) if isinstance(entry.path, str) else None
        if entry.type not in ("file", "dir", "symlink") or not isinstance(entry.path, str) \
                or (entry.sha256 and not is_sha256(entry.sha256)) or not all(is_sha256(h) for h, _ in entry.chunks):
            raise ValueError(f"entry {str(d.get('path'))[:80]!r} has a type or hash that is not one")
        # Fleet writes only these two (normal_mode); any other came from a forged manifest and would
        # be applied as given: setuid, setgid or world-writable files in the destination.
        if entry.type == "file" and entry.mode not in FILE_MODES:
            raise ValueError(f"entry {entry.path[:80]!r} has a mode ({entry.mode:#o}) no snapshot file has")
        return entry


@dataclass
class Manifest:
    entries: list[Entry]
    deleted: list[str] = field(default_factory=list)   # overlay snapshots (dirty code): paths to remove
    format: int = FORMAT

    def canonical_bytes(self) -> bytes:
        body: dict[str, Any] = {"format": self.format,
                                "entries": [e.to_json() for e in sorted(self.entries, key=lambda e: e.path)]}
        if self.deleted:
            body["deleted"] = sorted(self.deleted)
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()

    @property
    def id(self) -> str:
        return hashlib.sha256(self.canonical_bytes()).hexdigest()

    @classmethod
    def from_bytes(cls, data: bytes, expected_id: str | None = None) -> "Manifest":
        if expected_id is not None and hashlib.sha256(data).hexdigest() != expected_id:
            raise IntegrityError(f"manifest of snapshot {expected_id[:12]} is corrupt: its hash does not match its id")
        try:
            body = json.loads(data)
            if not isinstance(body, dict):
                raise ValueError("not a JSON object")
            fmt = body.get("format")
            if fmt not in READABLE_FORMATS or isinstance(fmt, bool):
                raise ValueError(f"unknown manifest format {fmt!r}")
            deleted = body.get("deleted", [])
            if not isinstance(deleted, list) or not all(isinstance(p, str) for p in deleted):
                raise ValueError("'deleted' is not a list of paths")
            # Checked here too, not only where a machine applies them (found by fuzzing manifests)
            return cls(entries=[Entry.from_json(e) for e in body["entries"]],
                       deleted=[check_relpath(p) for p in deleted], format=fmt)
        # Overflow: 1e400 is valid JSON (an infinite float) where an int belongs; recursion: nesting
        # deeper than the parser goes. Both are bytes anyone who can write a shared store can plant.
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
            raise IntegrityError(f"manifest {(expected_id or '?')[:12]} is unreadable: {exc}") from None

    # -- summaries ------------------------------------------------------------------------------
    def files(self) -> list[Entry]:
        return [e for e in self.entries if e.type == "file"]

    @property
    def total_size(self) -> int:
        return sum(e.size for e in self.files())

    def chunk_ids(self) -> set[str]:
        return {h for e in self.files() for h, _ in e.chunks}

    def unique_chunk_bytes(self) -> int:
        seen: dict[str, int] = {}
        for e in self.files():
            for h, n in e.chunks:
                seen[h] = n
        return sum(seen.values())

    def by_path(self) -> dict[str, Entry]:
        return {e.path: e for e in self.entries}


def is_sha256(text: object) -> bool:
    """64 lowercase hex digits, as hashlib's hexdigest writes a sha256 (the store's HEX64, whole)."""
    return isinstance(text, str) and HEX64.fullmatch(text) is not None


def check_relpath(path: str) -> str:
    """Reject paths that could escape the destination when materialised."""
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise IntegrityError(f"manifest path {path!r} is not a clean relative path")
    return path
