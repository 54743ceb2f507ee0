"""Creating snapshots: walk a tree (or take entries from any source), chunk, store, publish.

Files are chunked and hashed by a bounded pool of threads (FastCDC, sha256, reads and writes all
release the GIL), a large file that is more than a thread's share of the work by two threads at once
(its chunk hashes in one, its whole-content hash in the other). Files whose stat matches the stat cache are not read at all. Memory is bounded
by the pool: each thread holds one read buffer, and only a window of files is in flight.

Publishing order is what makes a create atomic: every chunk is stored (and flushed) before the
manifest is written, and the name is pointed at the manifest last. An interrupted create leaves only
unreferenced chunks, which `gc` removes; no half snapshot is ever visible.
"""
from __future__ import annotations

import hashlib
import marshal
import os
import stat
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Iterable

from ..errors import FleetError, UsageError
from .chunking import FileDigest, digest_stream, hash_whole, open_for_reading
from .links import outside_links
from .manifest import Entry, Manifest, normal_mode
from .progress import Meter, ProgressCallback
from .statcache import FileRecord, StatCache, TreeHit, load_hit, rememberable, save_hit, stat_key
from .store import Store, check_new_name, claim_ref
from .store_guard import guarded
from .tree_scan import DEFAULT_EXCLUDES, scan_tree

if TYPE_CHECKING:
    from concurrent.futures import Future

SPLIT_MIN = 8 * 1024 * 1024   # this big and over a thread's share: hashed by two threads (a lone change: half the time)


def default_workers() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(2, min(8, cpus))


@dataclass
class CreateResult:
    id: str
    _manifest: Manifest | None
    new_chunks: int = 0
    new_bytes: int = 0
    warnings: list[str] = field(default_factory=list)
    bytes_hashed: int = 0          # file content actually read (the rest came from the stat cache)
    files_cached: int = 0          # files taken unchanged from the stat cache
    store: Store | None = field(default=None, repr=False)   # where `manifest` is read from when not built
    counts: tuple[int, int] | None = None                    # (files, bytes), known without the manifest

    @property
    def files(self) -> int:         # how many regular files the snapshot holds
        return self.counts[0] if self.counts is not None else len(self.manifest.files())

    @property
    def size(self) -> int:          # their bytes
        return self.counts[1] if self.counts is not None else self.manifest.total_size

    @property
    def built(self) -> bool:
        """Whether this create read the tree (False: a whole-tree hit of an unchanged one)."""
        return self._manifest is not None

    @property
    def manifest(self) -> Manifest:
        """The snapshot's manifest: built by this create, or (a whole-tree hit) read from the store
        only when asked for."""
        if self._manifest is None:
            from .catalog import load
            self._manifest = load(self.store, self.id)      # type: ignore[arg-type]
        return self._manifest


class SnapshotBuilder:
    """Collect entries, store their chunks (only those the store lacks), then publish once."""

    def __init__(self, store: Store, cache: StatCache | None = None, *, progress: ProgressCallback | None = None,
                 workers: int | None = None):
        self.store = guarded(store)    # writes announced: a gc never runs between its checks and its manifest
        self.cache = cache             # kept for callers that pass one; trees use create_snapshot's cache
        self.entries: list[Entry] = []
        self.deleted: list[str] = []
        self.warnings: list[str] = []
        self.new_chunks = self.new_bytes = 0
        self.files_cached = 0
        self.remembered: dict[str, FileRecord] = {}
        self.meter = Meter(progress)
        self.workers = workers or default_workers()
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        # Remote stores (S3): uploads overlap hashing; chunk bytes held for them are bounded.
        self._uploads = None
        if store.parallel > 1:
            from concurrent.futures import ThreadPoolExecutor   # imported when used: an unchanged tree never is
            self._uploads = ThreadPoolExecutor(store.parallel)
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
                if not self.store.has_chunks({h: len(payload)}):     # one cut short is written again
                    self.store.put_chunk(h, payload)
                    self._counted(len(payload))
            finally:
                self._slots.release()
        from ..parallel import submit_or_thread   # at interpreter shutdown: on plain threads, or here
        future = submit_or_thread(self._uploads, upload)   # not under the lock: done here, upload takes it
        with self._lock:
            self._futures.append(future)

    def _drain(self) -> None:
        with self._lock:
            futures, self._futures = self._futures, []
        for f in futures:
            f.result()   # re-raises the first store error

    # -- reading files --------------------------------------------------------------------------
    def _digest(self, real: str, st: os.stat_result, whole: bool = True) -> FileDigest:
        try:
            with open_for_reading(real) as f:
                d = digest_stream(f, self._put, size_hint=st.st_size, whole=whole, on_bytes=self.meter.hashed)
                if stat.S_ISREG(st.st_mode) and stat_key(os.fstat(f.fileno())) != stat_key(st):   # written while read
                    raise UsageError(f"{real} changed while it was being snapshotted",
                                     hint="snapshot it again once nothing is writing to it")
                return d
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
        from concurrent.futures import ThreadPoolExecutor

        from ..parallel import submit_or_thread   # at interpreter shutdown: on plain threads
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="fleet-snapshot")
        pending: deque = deque()
        # Only a large file over a thread's share is split: read twice, a cost only when all are busy.
        share = sum(st.st_size for _, _, st in items) // self.workers
        try:
            for rel, real, st in items:
                split = st.st_size >= SPLIT_MIN and st.st_size > share
                chunks = submit_or_thread(pool, self._digest, real, st, not split)
                whole = submit_or_thread(pool, self._whole, real) if split else None
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
    def publish_known(self, name: str | None, sid: str, files: int, size: int) -> CreateResult:
        """A whole-tree hit: snapshot `sid` again (the store holds its manifest), named if asked."""
        self.files_cached = files
        self.meter.file_done(size, files)
        result = self.publish(name, known_id=sid)
        result.counts = (files, size)
        return result

    def publish(self, name: str | None = None, *, known_id: str | None = None) -> CreateResult:
        """Store the manifest (unless `known_id` says the store already holds this very one) and name it."""
        try:
            self._drain()
        finally:
            if self._uploads is not None:
                self._uploads.shutdown(wait=True)
        manifest = Manifest(entries=self.entries, deleted=self.deleted) if known_id is None else None
        data = manifest.canonical_bytes() if manifest is not None else b""
        sid = known_id or hashlib.sha256(data).hexdigest()      # = manifest.id, without encoding it twice
        if name is not None:
            check_new_name(name)
            if (current := self.store.get_ref(name)) is not None and current != sid:
                raise UsageError(f"snapshot name {name!r} already points to {current[:12]}, which has other content",
                                 hint="pick another name")
        self.store.flush()
        if known_id is None and not self.store.has_manifest(sid):
            self.store.put_manifest(sid, data)
        self.store.done()          # the manifest holds its chunks now
        if name is not None and (held := claim_ref(self.store, name, sid)) != sid:   # a create racing this one
            raise UsageError(f"snapshot name {name!r} already points to {held[:12]}, which has other content")
        self.meter.report(force=True, finished=True)
        warnings = self.warnings + outside_links(self.entries, "the snapshot")
        return CreateResult(sid, manifest, self.new_chunks, self.new_bytes, warnings,
                            self.meter.bytes_hashed, self.files_cached, self.store.inner)

    def abort(self) -> None:
        self.store.done()
        if self._uploads is not None:
            self._uploads.shutdown(wait=True, cancel_futures=True)


def create_snapshot(path: str | Path, store: Store, *, name: str | None = None,
                    excludes: Iterable[str] = DEFAULT_EXCLUDES, use_cache: bool = True,
                    progress: ProgressCallback | None = None, workers: int | None = None) -> CreateResult:
    """Snapshot a directory (its contents) or a single file; returns the id (same bytes → same id).
    `progress` gets a SnapshotProgress a few times a second from whichever thread is hashing."""
    from .own_state import own_state_under
    root = Path(path).expanduser()
    if name is not None:
        check_new_name(name)
    try:
        st_root = root.stat()
    except FileNotFoundError:
        raise UsageError(f"no such file or directory: {root}") from None
    except PermissionError:
        raise UsageError(f"cannot read {root}: permission denied") from None
    excludes = (*excludes, *own_state_under(root, store))     # FLEET_HOME, a file:// store inside it
    builder = SnapshotBuilder(store, progress=progress, workers=workers)
    files: list[tuple[str, str, os.stat_result]] = []
    # The tree's signature (statcache): each path's type, mode, stat or link target, as tuples hashed
    # through marshal (C; this loop is most of an unchanged re-snapshot).
    seen: list[tuple] = [(st_root.st_dev, st_root.st_ino)]
    if stat.S_ISREG(st_root.st_mode):
        files.append((root.name, os.path.realpath(root), st_root))   # a link named on purpose: its file
        seen.append((root.name, "f", st_root.st_mode, *stat_key(st_root)))
    elif stat.S_ISDIR(st_root.st_mode):
        is_reg, is_dir, is_lnk = stat.S_ISREG, stat.S_ISDIR, stat.S_ISLNK
        for rel, real, st in scan_tree(str(root), excludes):
            mode = st.st_mode
            if is_reg(mode):
                files.append((rel, real, st))
                seen.append((rel, "f", mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
            elif is_dir(mode):
                builder.add_dir(rel, mode)
                seen.append((rel, "d", mode))
            elif is_lnk(mode):
                target = os.readlink(real)
                builder.add_symlink(rel, target)
                seen.append((rel, "l", target))
            else:
                builder.warnings.append(f"skipped {rel}: not a regular file, directory or symlink")
                seen.append((rel, "?"))
    else:
        raise UsageError(f"{root} is not a regular file or directory")
    signature = hashlib.sha256(marshal.dumps(seen)).hexdigest()
    size = sum(st.st_size for _, _, st in files)
    builder.meter.start(len(files), size)
    key = os.path.abspath(root)
    hit = load_hit(key, store.url) if use_cache else None
    if hit is not None and hit.signature == signature and hit.files == len(files) and hit.size == size \
            and not builder.warnings and store.has_manifest(hit.id) and len(store.has_chunks(hit.chunks)) == len(hit.chunks):
        # The very tree that gave snapshot hit.id (every path, type, mode and stat the same, every file
        # remembered then), its chunks all still stored: that snapshot again, nothing read or encoded.
        return builder.publish_known(name, hit.id, len(files), size)
    cache = StatCache.open() if use_cache else None
    try:
        known = cache.load(key, st_root, store.url) if cache is not None else {}
        todo = _use_cache(builder, builder.store, files, known)
        builder.add_files(todo)
        result = builder.publish(name)
        if cache is not None:
            if builder.remembered != known:
                cache.save(key, st_root, store.url, builder.remembered)
            whole = len(builder.remembered) == len(files) and not builder.warnings
            sizes = {h: n for e in result.manifest.files() for h, n in e.chunks}   # a chunk cut short: not present
            save_hit(key, store.url, TreeHit(signature, result.id, len(files), size, sizes) if whole else None)
        return result
    except (FleetError, KeyboardInterrupt):
        builder.abort()
        raise
    finally:
        if cache is not None:
            cache.close()


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
    present = store.has_chunks({h: n for _, rec in hits for h, n in rec[5]})   # one cut short: file read again
    for item, rec in hits:
        if all(h in present for h, _ in rec[5]):
            builder.add_known(item[0], item[2], rec)
        else:
            todo.append(item)
    return todo
