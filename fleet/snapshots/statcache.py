"""Remember each file's chunks by (path, size, mtime, ctime, inode) so re-pinning unchanged data
does not re-read it (like git's index). A stale hit is impossible to trust blindly, so: entries are
keyed by store too, files modified in the last 2 seconds are never cached (mtime granularity races),
and a hit is used only if every chunk is still in the store."""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from pathlib import Path


class StatCache:
    def __init__(self, path: Path):
        self.conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("CREATE TABLE IF NOT EXISTS files (path TEXT, store TEXT, size INTEGER, mtime_ns INTEGER,"
                          " ctime_ns INTEGER, ino INTEGER, sha256 TEXT, chunks TEXT, PRIMARY KEY (path, store))")

    @classmethod
    def open(cls) -> "StatCache | None":
        from ..paths import subdir
        try:
            return cls(subdir("cache") / "statcache.db")
        except (sqlite3.Error, OSError):
            return None    # a cache is an optimisation: never fail a create over it

    def lookup(self, real: Path, st: os.stat_result, store: str) -> tuple[str, list[tuple[str, int]]] | None:
        try:
            row = self.conn.execute("SELECT size, mtime_ns, ctime_ns, ino, sha256, chunks FROM files"
                                    " WHERE path = ? AND store = ?", (str(real.resolve()), store)).fetchone()
        except sqlite3.Error:
            return None
        if row and tuple(row[:4]) == (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino):
            return row[4], [(h, int(n)) for h, n in json.loads(row[5])]
        return None

    def remember(self, real: Path, st: os.stat_result, store: str, sha: str, chunks: list[tuple[str, int]]) -> None:
        if time.time() - st.st_mtime < 2:
            return
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?)",
                              (str(real.resolve()), store, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino,
                               sha, json.dumps(chunks)))

    def close(self) -> None:
        self.conn.close()
