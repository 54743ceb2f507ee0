"""Creating snapshots: walk a tree (or take entries from any source), chunk, store, publish.

Publishing order is what makes a create atomic: every chunk is stored (and flushed) before the
manifest is written, and the name is pointed at the manifest last. An interrupted create leaves only
unreferenced chunks, which `gc` removes; no half snapshot is ever visible.
"""
from __future__ import annotations

import hashlib
import os
import stat
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterable

from ..errors import FleetError, UsageError
from .chunking import chunk_stream
from .manifest import Entry, Manifest, normal_mode
from .statcache import StatCache
from .store import Store, check_name

DEFAULT_EXCLUDES = (".git", "__pycache__", ".fleet", ".venv", ".DS_Store", ".fleet-snapshot")


@dataclass
class CreateResult:
    id: str
    manifest: Manifest
    new_chunks: int = 0
    new_bytes: int = 0
    warnings: list[str] = field(default_factory=list)


class SnapshotBuilder:
    """Collect entries, store their chunks (only those the store lacks), then publish once."""

    def __init__(self, store: Store, cache: StatCache | None = None):
        self.store = store
        self.cache = cache
        self.entries: list[Entry] = []
        self.deleted: list[str] = []
        self.warnings: list[str] = []
        self.new_chunks = 0
        self.new_bytes = 0
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(store.parallel) if store.parallel > 1 else None
        self._slots = threading.BoundedSemaphore(store.parallel * 2)   # bounds chunk bytes held in memory
        self._futures: list[Future] = []

    # -- chunks ---------------------------------------------------------------------------------
    def _put(self, h: str, data: bytes) -> None:
        with self._lock:
            if h in self._seen:
                return
            self._seen.add(h)
        if self._pool is None:
            if not self.store.has_chunks([h]):
                self.store.put_chunk(h, data)
                self.new_chunks += 1
                self.new_bytes += len(data)
            return
        self._slots.acquire()

        def upload() -> None:
            try:
                if not self.store.has_chunks([h]):
                    self.store.put_chunk(h, data)
                    with self._lock:
                        self.new_chunks += 1
                        self.new_bytes += len(data)
            finally:
                self._slots.release()
        self._futures.append(self._pool.submit(upload))

    def _drain(self) -> None:
        futures, self._futures = self._futures, []
        for f in futures:
            f.result()   # re-raises the first store error

    # -- entries --------------------------------------------------------------------------------
    def add_stream(self, path: str, mode: int, f: BinaryIO) -> Entry:
        whole = hashlib.sha256()
        chunks, size = [], 0
        for data in chunk_stream(f):
            h = hashlib.sha256(data).hexdigest()
            whole.update(data)
            chunks.append((h, len(data)))
            size += len(data)
            self._put(h, data)
        entry = Entry(path=path, type="file", mode=normal_mode(mode), size=size, sha256=whole.hexdigest(),
                      chunks=tuple(chunks))
        self.entries.append(entry)
        return entry

    def add_file(self, path: str, real: Path, st: os.stat_result) -> Entry:
        if self.cache is not None:
            hit = self.cache.lookup(real, st, self.store.url)
            if hit is not None:
                sha, chunks = hit
                missing = {h for h, _ in chunks} - self.store.has_chunks({h for h, _ in chunks})
                if not missing:
                    entry = Entry(path=path, type="file", mode=normal_mode(st.st_mode), size=st.st_size,
                                  sha256=sha, chunks=tuple(chunks))
                    self.entries.append(entry)
                    return entry
        try:
            with open(real, "rb") as f:
                entry = self.add_stream(path, st.st_mode, f)
        except PermissionError:
            raise UsageError(f"cannot read {real}: permission denied") from None
        except OSError as exc:
            raise UsageError(f"cannot read {real}: {exc.strerror or exc}") from None
        if self.cache is not None:
            self.cache.remember(real, st, self.store.url, entry.sha256, list(entry.chunks))
        return entry

    def add_dir(self, path: str, mode: int = 0o755) -> None:
        self.entries.append(Entry(path=path, type="dir", mode=normal_mode(mode)))

    def add_symlink(self, path: str, target: str) -> None:
        self.entries.append(Entry(path=path, type="symlink", target=target))

    # -- publish --------------------------------------------------------------------------------
    def publish(self, name: str | None = None) -> CreateResult:
        try:
            self._drain()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
        manifest = Manifest(entries=self.entries, deleted=self.deleted)
        data = manifest.canonical_bytes()
        sid = hashlib.sha256(data).hexdigest()
        if name is not None:
            check_name(name)
            current = self.store.get_ref(name)
            if current is not None and current != sid:
                raise UsageError(f"snapshot name {name!r} already points to {current[:12]}, which has other content",
                                 hint="pick another name")
        self.store.flush()
        if not self.store.has_manifest(sid):
            self.store.put_manifest(sid, data)
        if name is not None and self.store.get_ref(name) != sid:
            self.store.set_ref(name, sid)
        return CreateResult(sid, manifest, self.new_chunks, self.new_bytes, self.warnings)

    def abort(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def walk_tree(root: Path, excludes: Iterable[str] = DEFAULT_EXCLUDES) -> Iterable[tuple[str, Path, os.stat_result]]:
    """(relative posix path, real path, lstat) for everything under root, sorted, symlinks not followed.
    An exclude without "/" skips that name at any depth; one with "/" skips that relative path."""
    skip = {e for e in excludes if "/" not in e}
    skip_paths = {e.strip("/") for e in excludes if "/" in e}

    def onerror(exc: OSError) -> None:
        raise UsageError(f"cannot read directory {exc.filename}: {exc.strerror or exc}")

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror):
        dirnames[:] = sorted(d for d in dirnames if d not in skip)
        base = Path(dirpath)
        if skip_paths:
            rel_dir = base.relative_to(root).as_posix()
            prefix = "" if rel_dir == "." else rel_dir + "/"
            dirnames[:] = [d for d in dirnames if prefix + d not in skip_paths]
            filenames = [f for f in filenames if prefix + f not in skip_paths]
        for name in sorted(dirnames) + sorted(f for f in filenames if f not in skip):
            real = base / name
            yield real.relative_to(root).as_posix(), real, real.lstat()


def create_snapshot(path: str | Path, store: Store, *, name: str | None = None,
                    excludes: Iterable[str] = DEFAULT_EXCLUDES, use_cache: bool = True,
                    progress=None) -> CreateResult:
    """Snapshot a directory (its contents) or a single file; returns the id (same bytes → same id)."""
    root = Path(path).expanduser()
    if name is not None:
        check_name(name)
    try:
        st_root = root.stat()
    except FileNotFoundError:
        raise UsageError(f"no such file or directory: {root}") from None
    except PermissionError:
        raise UsageError(f"cannot read {root}: permission denied") from None
    cache = StatCache.open() if use_cache else None
    builder = SnapshotBuilder(store, cache)
    try:
        if stat.S_ISREG(st_root.st_mode):
            builder.add_file(root.name, root, st_root)
            if progress:
                progress(st_root.st_size)
        elif stat.S_ISDIR(st_root.st_mode):
            for rel, real, st in walk_tree(root, excludes):
                if stat.S_ISLNK(st.st_mode):
                    builder.add_symlink(rel, os.readlink(real))
                elif stat.S_ISDIR(st.st_mode):
                    builder.add_dir(rel, st.st_mode)
                elif stat.S_ISREG(st.st_mode):
                    builder.add_file(rel, real, st)
                    if progress:
                        progress(st.st_size)
                else:
                    builder.warnings.append(f"skipped {rel}: not a regular file, directory or symlink")
        else:
            raise UsageError(f"{root} is not a regular file or directory")
        return builder.publish(name)
    except (FleetError, KeyboardInterrupt):
        builder.abort()
        raise
    finally:
        if cache is not None:
            cache.close()
