"""Creating snapshots: walk a tree (or take entries from any source), chunk, store, publish.

Files are chunked and hashed by a bounded pool of threads (FastCDC, sha256, reads and writes all
release the GIL), a large file by two threads at once (its chunk hashes in one, its whole-content
hash in the other). Files whose stat matches the stat cache are not read at all. Memory is bounded
by the pool: each thread holds one read buffer, and only a window of files is in flight.

Publishing order is what makes a create atomic: every chunk is stored (and flushed) before the
manifest is written, and the name is pointed at the manifest last. An interrupted create leaves only
unreferenced chunks, which `gc` removes; no half snapshot is ever visible.
"""
from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from ..errors import FleetError, UsageError
from .chunking import FileDigest, digest_stream, hash_whole, open_for_reading
from .manifest import Entry, Manifest, normal_mode
from .progress import Meter, ProgressCallback
from .statcache import FileRecord, StatCache, rememberable, stat_key
from .store import Store, check_name

# .fleet-snapshot: the marker older fleets left in materialised trees; never part of a snapshot.
DEFAULT_EXCLUDES = (".git", "__pycache__", ".fleet", ".venv", ".DS_Store", ".fleet-snapshot")
SPLIT_MIN = 8 * 1024 * 1024       # files at least this big are hashed by two threads at once (a lone changed
                                  # file then takes half the time; page-cache reads are cheap next to sha256)


def default_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(2, min(8, cpus))


@dataclass
class CreateResult:
    id: str
    manifest: Manifest
    new_chunks: int = 0
    new_bytes: int = 0
    warnings: list[str] = field(default_factory=list)
    bytes_hashed: int = 0          # file content actually read (the rest came from the stat cache)
    files_cached: int = 0          # files taken unchanged from the stat cache


class SnapshotBuilder:
    """Collect entries, store their chunks (only those the store lacks), then publish once."""

    def __init__(self, store: Store, cache: StatCache | None = None, *, progress: ProgressCallback | None = None,
                 workers: int | None = None):
        self.store = store
        self.cache = cache             # kept for callers that pass one; trees use create_snapshot's cache
        self.entries: list[Entry] = []
        self.deleted: list[str] = []
        self.warnings: list[str] = []
        self.new_chunks = 0
        self.new_bytes = 0
        self.files_cached = 0
        self.remembered: dict[str, FileRecord] = {}
        self.meter = Meter(progress)
        self.workers = workers or default_workers()
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        # Remote stores (S3): uploads overlap hashing; chunk bytes held for them are bounded.
        self._uploads = ThreadPoolExecutor(store.parallel) if store.parallel > 1 else None
        self._slots = threading.BoundedSemaphore(store.parallel * 2)
        self._futures: list[Future] = []

    # -- chunks ---------------------------------------------------------------------------------
    def _counted(self, n: int) -> None:
        with self._lock:
            self.new_chunks += 1
            self.new_bytes += n
        self.meter.stored(n)

    def _put(self, h: str, data: bytes | memoryview) -> None:
        """Store one chunk unless this create or the store already has it. `data` may be a view
        into a reused buffer: it is written (or copied) before this returns."""
        with self._lock:
            if h in self._seen:
                return
            self._seen.add(h)
        if self._uploads is None:
            # The store checks for the chunk itself (and makes a present but young one durable too).
            if self.store.put_chunk(h, data):
                self._counted(len(data))
            return
        payload = bytes(data)
        self._slots.acquire()

        def upload() -> None:
            try:
                if not self.store.has_chunks([h]):
                    self.store.put_chunk(h, payload)
                    self._counted(len(payload))
            finally:
                self._slots.release()
        with self._lock:
            self._futures.append(self._uploads.submit(upload))

    def _drain(self) -> None:
        with self._lock:
            futures, self._futures = self._futures, []
        for f in futures:
            f.result()   # re-raises the first store error

    # -- reading files --------------------------------------------------------------------------
    def _digest(self, real: str, st: os.stat_result, whole: bool = True) -> FileDigest:
        try:
            with open_for_reading(real) as f:
                return digest_stream(f, self._put, size_hint=st.st_size, whole=whole, on_bytes=self.meter.hashed)
        except PermissionError:
            raise UsageError(f"cannot read {real}: permission denied") from None
        except OSError as exc:
            raise UsageError(f"cannot read {real}: {exc.strerror or exc}") from None

    def _whole(self, real: str) -> tuple[str, int]:
        try:
            with open_for_reading(real) as f:
                return hash_whole(f)
        except OSError as exc:
            raise UsageError(f"cannot read {real}: {exc.strerror or exc}") from None

    def _file_entry(self, path: str, st: os.stat_result, d: FileDigest) -> Entry:
        entry = Entry(path=path, type="file", mode=normal_mode(st.st_mode), size=d.size, sha256=d.sha256,
                      chunks=d.chunks)
        if d.size == st.st_size and rememberable(st):
            self.remembered[path] = (*stat_key(st), d.sha256, d.chunks)
        self.entries.append(entry)
        self.meter.file_done()
        return entry

    # -- entries --------------------------------------------------------------------------------
    def add_stream(self, path: str, mode: int, f: BinaryIO) -> Entry:
        d = digest_stream(f, self._put, on_bytes=self.meter.hashed)
        entry = Entry(path=path, type="file", mode=normal_mode(mode), size=d.size, sha256=d.sha256, chunks=d.chunks)
        self.entries.append(entry)
        return entry

    def add_file(self, path: str, real: Path | str, st: os.stat_result) -> Entry:
        return self._file_entry(path, st, self._digest(str(real), st))

    def add_known(self, path: str, st: os.stat_result, record: FileRecord) -> Entry:
        """A file the stat cache vouches for: its recorded hash and chunks, nothing read."""
        entry = Entry(path=path, type="file", mode=normal_mode(st.st_mode), size=record[0], sha256=record[4],
                      chunks=record[5])
        self.entries.append(entry)
        self.remembered[path] = record
        self.files_cached += 1
        self.meter.file_done(record[0])
        return entry

    def add_files(self, items: list[tuple[str, str, os.stat_result]]) -> None:
        """Read many files on the pool; a window of them in flight, entries kept in input order."""
        if self.workers <= 1 or (len(items) == 1 and items[0][2].st_size < SPLIT_MIN):
            for rel, real, st in items:
                self.add_file(rel, real, st)
            return
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="fleet-snapshot")
        pending: deque = deque()
        try:
            for rel, real, st in items:
                split = st.st_size >= SPLIT_MIN
                chunks = pool.submit(self._digest, real, st, not split)
                whole = pool.submit(self._whole, real) if split else None
                pending.append((rel, real, st, chunks, whole))
                while len(pending) >= self.workers * 4:
                    self._finish(*pending.popleft())
            while pending:
                self._finish(*pending.popleft())
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)

    def _finish(self, rel: str, real: str, st: os.stat_result, chunks: Future, whole: Future | None) -> None:
        d = chunks.result()
        if whole is not None:
            sha, size = whole.result()
            # Two reads of one file: they agree only if it did not change in between.
            if size != d.size or stat_key(os.stat(real)) != stat_key(st):
                raise UsageError(f"{real} changed while it was being snapshotted",
                                 hint="snapshot it again once nothing is writing to it")
            d = FileDigest(sha, d.size, d.chunks)
        self._file_entry(rel, st, d)

    def add_dir(self, path: str, mode: int = 0o755) -> None:
        self.entries.append(Entry(path=path, type="dir", mode=normal_mode(mode)))

    def add_symlink(self, path: str, target: str) -> None:
        self.entries.append(Entry(path=path, type="symlink", target=target))

    # -- publish --------------------------------------------------------------------------------
    def publish(self, name: str | None = None, *, known_id: str | None = None) -> CreateResult:
        """Store the manifest (unless `known_id` says the store already holds this very one) and name it."""
        try:
            self._drain()
        finally:
            if self._uploads is not None:
                self._uploads.shutdown(wait=True)
        manifest = Manifest(entries=self.entries, deleted=self.deleted)
        data = manifest.canonical_bytes() if known_id is None else b""
        sid = known_id or hashlib.sha256(data).hexdigest()      # = manifest.id, without encoding it twice
        if name is not None:
            check_name(name)
            current = self.store.get_ref(name)
            if current is not None and current != sid:
                raise UsageError(f"snapshot name {name!r} already points to {current[:12]}, which has other content",
                                 hint="pick another name")
        self.store.flush()
        if known_id is None and not self.store.has_manifest(sid):
            self.store.put_manifest(sid, data)
        if name is not None and self.store.get_ref(name) != sid:
            self.store.set_ref(name, sid)
        self.meter.report(force=True, finished=True)
        return CreateResult(sid, manifest, self.new_chunks, self.new_bytes, self.warnings,
                            self.meter.bytes_hashed, self.files_cached)

    def abort(self) -> None:
        if self._uploads is not None:
            self._uploads.shutdown(wait=True, cancel_futures=True)


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
    for rel, real, st in scan_tree(str(root), excludes):
        yield rel, Path(real), st


def create_snapshot(path: str | Path, store: Store, *, name: str | None = None,
                    excludes: Iterable[str] = DEFAULT_EXCLUDES, use_cache: bool = True,
                    progress: ProgressCallback | None = None, workers: int | None = None) -> CreateResult:
    """Snapshot a directory (its contents) or a single file; returns the id (same bytes → same id).
    `progress` gets a SnapshotProgress a few times a second from whichever thread is hashing."""
    root = Path(path).expanduser()
    if name is not None:
        check_name(name)
    try:
        st_root = root.stat()
    except FileNotFoundError:
        raise UsageError(f"no such file or directory: {root}") from None
    except PermissionError:
        raise UsageError(f"cannot read {root}: permission denied") from None
    builder = SnapshotBuilder(store, progress=progress, workers=workers)
    files: list[tuple[str, str, os.stat_result]] = []
    seen: list[str] = [f"{st_root.st_dev}:{st_root.st_ino}"]     # the tree's signature: see statcache
    if stat.S_ISREG(st_root.st_mode):
        files.append((root.name, str(root), st_root))
        seen.append(f"{root.name}\0f\0{st_root.st_mode}\0{stat_key(st_root)}")
    elif stat.S_ISDIR(st_root.st_mode):
        for rel, real, st in scan_tree(str(root), excludes):
            if stat.S_ISREG(st.st_mode):
                files.append((rel, real, st))
                seen.append(f"{rel}\0f\0{st.st_mode}\0{stat_key(st)}")
            elif stat.S_ISDIR(st.st_mode):
                builder.add_dir(rel, st.st_mode)
                seen.append(f"{rel}\0d\0{st.st_mode}")
            elif stat.S_ISLNK(st.st_mode):
                target = os.readlink(real)
                builder.add_symlink(rel, target)
                seen.append(f"{rel}\0l\0{target}")
            else:
                builder.warnings.append(f"skipped {rel}: not a regular file, directory or symlink")
                seen.append(f"{rel}\0?")
    else:
        raise UsageError(f"{root} is not a regular file or directory")
    signature = hashlib.sha256("\n".join(seen).encode(errors="surrogateescape")).hexdigest()
    builder.meter.start(len(files), sum(st.st_size for _, _, st in files))
    cache = StatCache.open() if use_cache else None
    key = os.path.abspath(root)
    try:
        known = cache.load(key, st_root, store.url) if cache is not None else {}
        same = cache.load_id(key, store.url) if known else None
        if same is not None and same[0] == signature and _all_known(files, known) and store.has_manifest(same[1]) \
                and _chunks_present(store, files, known):
            # The very tree that gave snapshot same[1], every file remembered: that snapshot again.
            for rel, _real, st in files:
                builder.add_known(rel, st, known[rel])
            return builder.publish(name, known_id=same[1])
        todo = _use_cache(builder, store, files, known)
        builder.add_files(todo)
        result = builder.publish(name)
        if cache is not None:
            if builder.remembered != known:
                cache.save(key, st_root, store.url, builder.remembered)
            whole = len(builder.remembered) == len(files) and not builder.warnings
            cache.save_id(key, store.url, signature if whole else None, result.id)
        return result
    except (FleetError, KeyboardInterrupt):
        builder.abort()
        raise
    finally:
        if cache is not None:
            cache.close()


def _all_known(files: list[tuple[str, str, os.stat_result]], known: dict[str, FileRecord]) -> bool:
    for rel, _real, st in files:
        rec = known.get(rel)
        if rec is None or rec[:4] != stat_key(st):
            return False
    return True


def _chunks_present(store: Store, files: list[tuple[str, str, os.stat_result]], known: dict[str, FileRecord]) -> bool:
    """Every chunk still in the store (one went missing: the files holding it are read again)."""
    wanted = {h for rel, _real, _st in files for h, _n in known[rel][5]}
    return len(store.has_chunks(wanted)) == len(wanted)


def _use_cache(builder: SnapshotBuilder, store: Store, files: list[tuple[str, str, os.stat_result]],
               known: dict[str, FileRecord]) -> list[tuple[str, str, os.stat_result]]:
    """Add every file the stat cache vouches for (and whose chunks the store still has); return the
    files that must be read."""
    if not known:
        return files
    hits, todo = [], []
    for item in files:
        rec = known.get(item[0])
        if rec is not None and rec[:4] == stat_key(item[2]):
            hits.append((item, rec))
        else:
            todo.append(item)
    present = store.has_chunks({h for _, rec in hits for h, _ in rec[5]})
    for item, rec in hits:
        if all(h in present for h, _ in rec[5]):
            builder.add_known(item[0], item[2], rec)
        else:
            todo.append(item)
    return todo
