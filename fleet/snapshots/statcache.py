"""Remember what each file of a snapshotted tree hashed to, so re-snapshotting an unchanged tree reads
no file content (like git's index): a file whose (size, mtime_ns, ctime_ns, inode) match its record
reuses the record's hash and chunk list.

The state lives under $FLEET_HOME/cache, never in the user's directories: one record per snapshotted
root, keyed by its absolute path and store, and valid only while the root is still the same
directory (device and inode) and the chunker the same (manifest format). A stale hit is never
trusted blindly: files modified in the 2 seconds before they were read are not remembered (mtime
granularity races), and the caller uses a hit only if every chunk is still in the store.

A whole tree can hit too: beside the records, the cache keeps the signature of the last scan (every
path, type, mode, stat and link target) and the snapshot id it gave, in a small file of its own
(`cache/trees/<key>.hit`: one JSON line, then the snapshot's chunk ids, one per line). A scan with
the same signature, all of whose files were remembered, is that snapshot again, once the store still
holds its manifest and every chunk: the records (SQLite) are not even opened, no manifest is
encoded or read, only the scan itself (the 0.2 s budget of an unchanged re-snapshot).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import marshal
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from .manifest import FORMAT

# rel path → (size, mtime_ns, ctime_ns, inode, sha256, ((chunk, length), ...))
FileRecord = tuple[int, int, int, int, str, tuple[tuple[str, int], ...]]
RACY_S = 2.0
MARSHALLED = b"M"       # first byte of records saved by marshal (zlib's own first byte is never "M")


def stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


class StatCache:
    def __init__(self, path: Path):
        import sqlite3            # not on the whole-tree hit's path (see TreeHit)
        self.conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("CREATE TABLE IF NOT EXISTS trees (root TEXT, store TEXT, format INTEGER, dev INTEGER,"
                          " ino INTEGER, data BLOB, PRIMARY KEY (root, store, format))")
        self.conn.execute("CREATE TABLE IF NOT EXISTS tree_ids (root TEXT, store TEXT, format INTEGER,"
                          " signature TEXT, id TEXT, PRIMARY KEY (root, store, format))")
        # Per-file rows of format 1 chunk lists (before trees): useless to the FastCDC chunker.
        self.conn.execute("DROP TABLE IF EXISTS files")
        # (signature, id) rows of fleets before the .hit files (read before SQLite is opened).
        self.conn.execute("DROP TABLE IF EXISTS tree_ids")

    @classmethod
    def open(cls) -> "StatCache | None":
        import sqlite3
        from ..paths import subdir
        try:
            return cls(subdir("cache") / "statcache.db")
        except (sqlite3.Error, OSError):
            return None    # a cache is an optimisation: never fail a create over it

    def load(self, root: str, st_root: os.stat_result, store: str) -> dict[str, FileRecord]:
        import sqlite3
        try:
            row = self.conn.execute("SELECT dev, ino, data FROM trees WHERE root = ? AND store = ? AND format = ?",
                                    (root, store, FORMAT)).fetchone()
            if not row or (row[0], row[1]) != (st_root.st_dev, st_root.st_ino):
                return {}
            data = bytes(row[2])
            if data[:1] == MARSHALLED:          # this fleet's records: the tuples as they were saved
                records = marshal.loads(zlib.decompress(data[1:]))
                if not isinstance(records, dict):
                    return {}
                return records
            raw = json.loads(zlib.decompress(data))     # an older fleet's JSON records
            return {rel: (r[0], r[1], r[2], r[3], r[4], tuple((h, int(n)) for h, n in r[5]))
                    for rel, r in raw.items()}
        except (sqlite3.Error, zlib.error, ValueError, TypeError, IndexError, KeyError, EOFError):
            return {}

    def save(self, root: str, st_root: os.stat_result, store: str, records: dict[str, FileRecord]) -> None:
        import sqlite3
        # marshal: several times faster than JSON both ways for thousands of small tuples (another
        # Python's marshal that cannot read it is a miss: the files are read again, nothing worse).
        data = MARSHALLED + zlib.compress(marshal.dumps(records), 1)
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("INSERT OR REPLACE INTO trees VALUES (?,?,?,?,?,?)",
                              (root, store, FORMAT, st_root.st_dev, st_root.st_ino, data))

    def close(self) -> None:
        self.conn.close()


@dataclass(frozen=True)
class TreeHit:
    """The last whole scan of a root into a store: its signature, the snapshot it gave, that
    snapshot's file count, size and chunks with their sizes (so a chunk cut short in the store is not
    counted present: the store's size check; a file an older fleet wrote lists ids only)."""
    signature: str
    id: str
    files: int
    size: int
    chunks: dict[str, int] | list[str]


def _hit_file(root: str, store: str, create: bool = False) -> Path | None:
    from ..errors import FleetError
    from ..paths import subdir
    key = hashlib.sha256(f"{FORMAT}\0{store}\0{root}".encode(errors="surrogateescape")).hexdigest()[:32]
    try:
        base = subdir("cache") / "trees"     # FLEET_HOME's ownership and mode checked, as for the records
        if create:
            base.mkdir(mode=0o700, exist_ok=True)
    except (OSError, FleetError):
        return None
    return base / f"{key}.hit"


def load_hit(root: str, store: str) -> TreeHit | None:
    path = _hit_file(root, store)
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            head, _, rest = f.read().partition(b"\n")
        meta = json.loads(head)
        if [meta.get("root"), meta.get("store"), meta.get("format")] != [root, store, FORMAT]:
            return None
        tokens = rest.decode().split()
        chunks = {h: int(n) for h, _, n in (t.partition(":") for t in tokens)} if all(":" in t for t in tokens) \
            else tokens
        return TreeHit(meta["signature"], meta["id"], int(meta["files"]), int(meta["size"]), chunks)
    except (OSError, TypeError, ValueError, KeyError, AttributeError):
        return None


def save_hit(root: str, store: str, hit: TreeHit | None) -> None:
    """Remember the whole-tree hit (None: forget it, the last scan was not whole). Never fails a create."""
    path = _hit_file(root, store, create=hit is not None)
    if path is None:
        return
    with contextlib.suppress(OSError):
        if hit is None:
            path.unlink(missing_ok=True)
            return
        meta = {"root": root, "store": store, "format": FORMAT, "signature": hit.signature, "id": hit.id,
                "files": hit.files, "size": hit.size}
        tmp = path.with_name(f"{path.name}.{os.getpid()}")
        chunks = [f"{h}:{n}" for h, n in sorted(hit.chunks.items())] if isinstance(hit.chunks, dict) else hit.chunks
        tmp.write_bytes(json.dumps(meta).encode() + b"\n" + "\n".join(chunks).encode())
        os.replace(tmp, path)


def rememberable(st: os.stat_result, now: float | None = None) -> bool:
    """False for a file changed so recently that a later change could keep the same mtime."""
    now = time.time() if now is None else now
    return now - max(st.st_mtime, st.st_ctime) >= RACY_S
