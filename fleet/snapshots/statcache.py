"""Remember what each file of a snapshotted tree hashed to, so re-snapshotting an unchanged tree reads
no file content (like git's index): a file whose (size, mtime_ns, ctime_ns, inode) match its record
reuses the record's hash and chunk list.

The state lives under $FLEET_HOME/cache, never in the user's directories: one record per snapshotted
root, keyed by its absolute path and store, and valid only while the root is still the same
directory (device and inode) and the chunker the same (manifest format). A stale hit is never
trusted blindly: files modified in the 2 seconds before they were read are not remembered (mtime
granularity races), and the caller uses a hit only if every chunk is still in the store.

A whole tree can hit too: beside the records, the cache keeps the signature of the last scan (every
path, type, mode, stat and link target) and the snapshot id it gave. A scan with the same signature,
all of whose files were remembered, is that snapshot again: no chunk lookups and no manifest to
encode, only the scan itself (the 0.2 s budget of an unchanged re-snapshot).
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
import zlib
from pathlib import Path

from .manifest import FORMAT

# rel path → (size, mtime_ns, ctime_ns, inode, sha256, ((chunk, length), ...))
FileRecord = tuple[int, int, int, int, str, tuple[tuple[str, int], ...]]
RACY_S = 2.0


def stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


class StatCache:
    def __init__(self, path: Path):
        self.conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("CREATE TABLE IF NOT EXISTS trees (root TEXT, store TEXT, format INTEGER, dev INTEGER,"
                          " ino INTEGER, data BLOB, PRIMARY KEY (root, store, format))")
        self.conn.execute("CREATE TABLE IF NOT EXISTS tree_ids (root TEXT, store TEXT, format INTEGER,"
                          " signature TEXT, id TEXT, PRIMARY KEY (root, store, format))")
        # Per-file rows of format 1 chunk lists (before trees): useless to the FastCDC chunker.
        self.conn.execute("DROP TABLE IF EXISTS files")

    @classmethod
    def open(cls) -> "StatCache | None":
        from ..paths import subdir
        try:
            return cls(subdir("cache") / "statcache.db")
        except (sqlite3.Error, OSError):
            return None    # a cache is an optimisation: never fail a create over it

    def load(self, root: str, st_root: os.stat_result, store: str) -> dict[str, FileRecord]:
        try:
            row = self.conn.execute("SELECT dev, ino, data FROM trees WHERE root = ? AND store = ? AND format = ?",
                                    (root, store, FORMAT)).fetchone()
            if not row or (row[0], row[1]) != (st_root.st_dev, st_root.st_ino):
                return {}
            raw = json.loads(zlib.decompress(row[2]))
            return {rel: (r[0], r[1], r[2], r[3], r[4], tuple((h, int(n)) for h, n in r[5]))
                    for rel, r in raw.items()}
        except (sqlite3.Error, zlib.error, ValueError, TypeError, IndexError, KeyError):
            return {}

    def save(self, root: str, st_root: os.stat_result, store: str, records: dict[str, FileRecord]) -> None:
        data = zlib.compress(json.dumps(records, separators=(",", ":")).encode(), 1)
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("INSERT OR REPLACE INTO trees VALUES (?,?,?,?,?,?)",
                              (root, store, FORMAT, st_root.st_dev, st_root.st_ino, data))

    def load_id(self, root: str, store: str) -> tuple[str, str] | None:
        """(signature, snapshot id) of the last scan of `root` into `store` that every file was remembered in."""
        try:
            row = self.conn.execute("SELECT signature, id FROM tree_ids WHERE root = ? AND store = ? AND format = ?",
                                    (root, store, FORMAT)).fetchone()
        except sqlite3.Error:
            return None
        return (row[0], row[1]) if row else None

    def save_id(self, root: str, store: str, signature: str | None, snapshot_id: str) -> None:
        with contextlib.suppress(sqlite3.Error):
            if signature is None:
                self.conn.execute("DELETE FROM tree_ids WHERE root = ? AND store = ? AND format = ?",
                                  (root, store, FORMAT))
            else:
                self.conn.execute("INSERT OR REPLACE INTO tree_ids VALUES (?,?,?,?,?)",
                                  (root, store, FORMAT, signature, snapshot_id))

    def close(self) -> None:
        self.conn.close()


def rememberable(st: os.stat_result, now: float | None = None) -> bool:
    """False for a file changed so recently that a later change could keep the same mtime."""
    now = time.time() if now is None else now
    return now - max(st.st_mtime, st.st_ctime) >= RACY_S
