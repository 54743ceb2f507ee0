"""The default store: plain files under $FLEET_HOME/store, written atomically.

Chunks are written the cheap way: a chunk goes to a dot name beside its final one, unique to this
process and thread (created read-only with O_EXCL, no chmod, no mkstemp), and is renamed into place
(its fan-out directory made on first use, spread over the filesystem), so a reader never sees half
a chunk. Nothing is fsynced as a chunk is written: `flush`, before the manifest that makes the
chunks reachable is written, fsyncs the chunks this process wrote and their directories from a pool
of threads (several fsyncs in flight share the journal's commits or the device's cache flushes).
Not syncfs: that would also wait for every other program's dirty data on the same filesystem
(measured: 0.42 s of a 60 MiB create while other work was writing).

Large chunks bypass the page cache (O_DIRECT, from one page-aligned buffer per thread): the data
being snapshotted is already in the page cache once, and a second cached copy would cost a page
allocation and a kernel copy per 4 KiB (the largest single cost of `snapshot create` in a profile)
and leave a gigabyte of dirty pages for `flush` to write out. A filesystem that refuses O_DIRECT
(some tmpfs, FUSE) gets ordinary writes; FLEET_STORE_DIRECT=0 turns it off."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from ..errors import EnvironmentProblem, IntegrityError, NotFound
from ..regular_files import NOT_REGULAR_ERRNOS, open_regular, read_regular
from .remote_files import spread_subdirs
from .store import (HEX64, MAX_CHUNK_BYTES, STORE_FORMAT, ManifestInfo, check_name, format_record,
                    is_snapshot_id, manifest_name, parse_format, read_ref_file)

_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
_O_DIRECT = getattr(os, "O_DIRECT", 0)
DIRECT_MIN = 128 * 1024          # smaller chunks: a synchronous device write each costs more than a copy
ALIGN = 4096                     # buffer address, length and offset of an O_DIRECT write
LIST_FROM = 8                    # has_chunks lists a fan-out directory asked about this many times
DIRENT_BYTES = 80                # about what one 64-hex name costs in a directory's size
YOUNG_S = 300                    # a chunk found this recently written may not be durable yet
FLUSH_THREADS = 16               # concurrent fsyncs: they share the journal's commits or the device's flushes
_local = threading.local()
# In every temporary chunk name beside the pid: processes sharing a store from different pid
# namespaces (a container, a sandbox) can have the same pid and thread id, and one must not take
# the other's live write for a crashed writer's leftover.
_WRITER = os.urandom(4).hex()


def _aligned_buffer(n: int) -> mmap.mmap:
    """This thread's page-aligned buffer of at least n bytes (anonymous mmap: aligned by construction)."""
    buf = getattr(_local, "buf", None)
    if buf is None or len(buf) < n:
        if buf is not None:
            buf.close()
        buf = _local.buf = mmap.mmap(-1, max(n, 4 * 1024 * 1024 + ALIGN))
    return buf


def _store_write_error(root: Path, path: Path, exc: OSError) -> EnvironmentProblem:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        # The store, not the chunk's fan-out directory (`…/store/chunks/f9 is full`), and a gc that
        # deletes: plain `gc` keeps chunks younger than its hour of grace, which are exactly the ones
        # this create wrote, so it freed nothing. Markers (store_guard.py) keep a gc of grace 0 off a
        # write still under way.
        return EnvironmentProblem(f"snapshot store {root} is full; nothing was published",
                                  hint="`fleet snapshot gc --grace 0` deletes the chunks this write left; then "
                                       "free space on that disk, or give the store more room")
    return EnvironmentProblem(f"cannot write to snapshot store at {path}: {exc.strerror or exc}")


class LocalStore:
    parallel = 1

    def __init__(self, root: Path):
        self.root = Path(root)
        self.url = str(self.root)
        self._chunks_dir = str(self.root / "chunks")
        self._tmp_dir = str(self.root / "tmp")
        self._unsynced: list[str] = []       # chunk files written since the last flush
        self._unsynced_lock = threading.Lock()
        self._direct = bool(_O_DIRECT) and os.environ.get("FLEET_STORE_DIRECT", "1") != "0"
        self._spread = False                 # chunks/ marked a top directory (see _fan_out)
        self.format = self._open_format()

    def _open_format(self) -> int:
        """The store's format; a new store (or one from before formats) gets the current one."""
        try:
            with open(self.root / "format", "rb") as f:
                fmt = parse_format(f.read(), str(self.root))
            if fmt >= STORE_FORMAT:
                return fmt
            try:                   # an older format: new chunks will be cut by this chunker
                self._write(self.root / "format", format_record(), durable=True)
                return STORE_FORMAT
            except EnvironmentProblem:
                return fmt         # read-only: it is only read
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise EnvironmentProblem(f"cannot read snapshot store at {self.root}: {exc.strerror or exc}") from None
        try:
            for sub in ("chunks", "manifests", "refs", "tmp"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            self._write(self.root / "format", format_record(), durable=True)
        except (OSError, EnvironmentProblem) as exc:
            if (self.root / "manifests").is_dir():
                return 1     # an old store we may only read (a read-only mount, someone else's files)
            if isinstance(exc, EnvironmentProblem):
                raise
            raise EnvironmentProblem(f"cannot create snapshot store at {self.root}: {exc.strerror or exc}") from None
        return parse_format(format_record(), str(self.root))

    # -- atomic files ---------------------------------------------------------------------------
    def _write(self, path: Path, data: bytes, *, durable: bool) -> None:
        """Temp file in the store's tmp dir, then rename: readers see the whole file or nothing."""
        import tempfile
        fd, tmp = tempfile.mkstemp(dir=self.root / "tmp", prefix=path.name[:16] + ".")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                if durable:
                    f.flush()
                    os.fsync(f.fileno())
            os.chmod(tmp, 0o444)
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, path)
            if durable:
                dfd = os.open(path.parent, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise _store_write_error(self.root, path, exc) from None

    # -- chunks ---------------------------------------------------------------------------------
    def _chunk(self, h: str) -> Path:
        return self.root / "chunks" / h[:2] / h

    def chunk_path(self, h: str) -> str | None:
        # Plain string joins: sync asks for thousands of these, and pathlib costs ~30 µs each.
        return os.path.join(self._chunks_dir, h[:2], h)

    def has_chunks(self, hashes: Iterable[str] | Mapping[str, int]) -> set[str]:
        """The ones the store holds: one stat each, or one listing of a fan-out directory asked about
        many times (an unchanged 1 GiB tree asks about ~6,000 chunks: 256 listings beat 6,000 stats),
        unless the directory holds far more than was asked about (a large store). Given sizes (hash →
        bytes), only chunks of that size: one cut short under its name (a crash, a full disk, another
        writer of a shared store) is written again."""
        if isinstance(hashes, Mapping):
            return {h for h, n in hashes.items() if _size(os.path.join(self._chunks_dir, h[:2], h)) == n}
        by_dir: dict[str, list[str]] = {}
        for h in hashes:
            by_dir.setdefault(h[:2], []).append(h)
        found: set[str] = set()
        for sub, wanted in by_dir.items():
            directory = os.path.join(self._chunks_dir, sub)
            if len(wanted) >= LIST_FROM:
                try:
                    # a directory's size is about DIRENT_BYTES per entry (ext4, xfs)
                    small = os.stat(directory).st_size <= len(wanted) * 16 * DIRENT_BYTES
                    names = set(os.listdir(directory)) if small else None
                except (FileNotFoundError, NotADirectoryError):
                    continue
                if names is not None:
                    found.update(h for h in wanted if h in names)
                    continue
            found.update(h for h in wanted if os.path.exists(os.path.join(directory, h)))
        return found

    def put_chunk(self, h: str, data: bytes | memoryview) -> bool:
        """Store a chunk (True), or note that the store has it (False)."""
        final = os.path.join(self._chunks_dir, h[:2], h)
        try:
            st = os.stat(final)
        except FileNotFoundError:
            pass
        else:
            if st.st_size == len(data):
                if st.st_mtime > time.time() - YOUNG_S:
                    # Another process may have just written it and not flushed yet: our manifest will
                    # refer to it, so our flush makes it durable too (syncfs used to cover this).
                    with self._unsynced_lock:
                        self._unsynced.append(final)
                return False
            # Another size is not this chunk (a power loss between a writer's rename and its flush can
            # leave the name with less): written again below and renamed over it.
        # The temporary name lives beside the final one (a dot name: never a chunk id), so the new
        # inode is allocated near its fan-out directory's, not in one shared tmp/ (see _fan_out).
        tmp = os.path.join(self._chunks_dir, h[:2], f".{h}.{os.getpid()}.{_WRITER}.{threading.get_ident()}")
        try:
            if not (self._direct and len(data) >= DIRECT_MIN and self._write_direct(tmp, data)):
                self._write_cached(tmp, data)
            os.rename(tmp, final)
            with self._unsynced_lock:
                self._unsynced.append(final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise _store_write_error(self.root, Path(final), exc) from None
        return True

    def _open_new(self, tmp: str, flags: int) -> int:
        try:
            return os.open(tmp, flags, 0o444)
        except FileExistsError:              # left by a crashed writer with our pid, token and thread id
            os.unlink(tmp)
        except FileNotFoundError:            # the fan-out directory's first chunk (or someone removed it)
            self._fan_out(os.path.dirname(tmp))
        return os.open(tmp, flags, 0o444)

    def _fan_out(self, directory: str) -> None:
        """Make a fan-out directory, spread over the filesystem. ext4 puts a new file's inode in its
        directory's block group and scans that group's free inodes from the start, skipping (one
        buffer lookup each) every inode freed in the last few minutes that is not yet written back
        (always, without a journal). Chunks all created in one directory land in one group, so after
        a store of thousands of chunks was deleted (gc, a benchmark's fresh store) each new chunk
        paid a scan over thousands: a profile of `snapshot create` spent a fifth of its CPU in
        `recently_deleted`. With chunks/ marked a top directory (FS_TOPDIR_FL, what `chattr +T`
        sets), ext4 spreads the 256 fan-out directories over many groups, and each chunk's inode is
        allocated near its own. Best effort: other filesystems ignore or refuse the flag."""
        if not self._spread:
            self._spread = True
            spread_subdirs(self._chunks_dir)
        os.makedirs(directory, exist_ok=True)

    def _write_cached(self, tmp: str, data: bytes | memoryview) -> None:
        fd = self._open_new(tmp, _WRITE_FLAGS)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)

    def _write_direct(self, tmp: str, data: bytes | memoryview) -> bool:
        """Write the whole blocks through O_DIRECT, then the last partial block (if any) through the
        page cache on the same descriptor (O_DIRECT turned off). Not padding and cutting back: a
        truncate inside a block written around the page cache reads that block back from the disk
        to zero its tail (0.47 ms per chunk, the largest wait of a profiled create). False (nothing
        left behind) where the filesystem refuses O_DIRECT; from then on this store writes through
        the page cache."""
        n = len(data)
        whole = n - n % ALIGN
        try:
            fd = self._open_new(tmp, _WRITE_FLAGS | _O_DIRECT)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self._direct = False
            return False
        try:
            buf = _aligned_buffer(whole)
            buf[:whole] = data[:whole]
            view = memoryview(buf)[:whole]
            try:
                done = 0
                while done < whole:
                    done += os.write(fd, view[done:])
            finally:
                view.release()
            if whole != n:
                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~_O_DIRECT)
                tail = memoryview(data)[whole:]
                while tail:
                    tail = tail[os.write(fd, tail):]
        except OSError as exc:
            os.close(fd)
            os.unlink(tmp)
            if exc.errno != errno.EINVAL:
                raise
            self._direct = False
            return False
        os.close(fd)
        return True

    def get_chunk(self, h: str) -> bytes:
        try:
            return read_regular(self._chunk(h), MAX_CHUNK_BYTES)    # a FIFO or link planted: b"", corrupt
        except FileNotFoundError:
            raise NotFound(f"chunk {h[:12]} is missing from the store {self.root}") from None

    def delete_chunk(self, h: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._chunk(h).unlink()

    def iter_chunks(self, older_than_s: float = 0) -> Iterator[str]:
        cutoff = time.time() - older_than_s
        for sub in sorted(_real_dirs(self.root / "chunks")):
            for f in sub.iterdir():
                if HEX64.match(f.name) and (older_than_s <= 0 or f.stat().st_mtime < cutoff):
                    yield f.name

    def flush(self) -> None:
        """Make every chunk written since the last flush durable: its file, then each directory that
        gained one (the renames), fsynced from a pool so the filesystem's journal commits them in
        few transactions; nothing when nothing was written."""
        with self._unsynced_lock:
            files, self._unsynced = self._unsynced, []
        if not files:
            return
        dirs = sorted({os.path.dirname(f) for f in files})
        try:
            from ..parallel import parallel     # also at interpreter shutdown; not on an unchanged re-snapshot's path
            parallel(files, _fsync_path, FLUSH_THREADS)
            parallel(dirs, _fsync_path, FLUSH_THREADS)
        except OSError as exc:
            raise _store_write_error(self.root, self.root / "chunks", exc) from None

    # -- manifests ------------------------------------------------------------------------------
    def put_manifest(self, snapshot_id: str, data: bytes) -> None:
        self._write(self.root / "manifests" / manifest_name(snapshot_id, str(self.root)), data, durable=True)

    def get_manifest(self, snapshot_id: str) -> bytes:
        # A regular file only, not through a link, not blocking: a FIFO planted in a shared store hung `ls`
        path = self.root / "manifests" / manifest_name(snapshot_id, str(self.root))
        try:
            fd = open_regular(path)
        except FileNotFoundError:
            raise NotFound(f"no snapshot {snapshot_id[:12]} in the store {self.root}") from None
        except OSError as exc:
            if exc.errno not in NOT_REGULAR_ERRNOS:   # unreadable (EACCES, EIO): said as it is
                raise
            raise IntegrityError(f"the manifest of snapshot {snapshot_id[:12]} in the store {self.root} is not a regular "
                                 "file (a link, FIFO, directory or device)", hint=f"remove {path}") from None
        with os.fdopen(fd, "rb") as handle:
            return handle.read()

    def has_manifest(self, snapshot_id: str) -> bool:
        return is_snapshot_id(snapshot_id) and (self.root / "manifests" / snapshot_id).exists()

    def delete_manifest(self, snapshot_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.root / "manifests" / manifest_name(snapshot_id, str(self.root))).unlink()

    def list_manifests(self) -> list[ManifestInfo]:
        stats = []   # lstat: a planted link is listed, and named damaged when read; one removed meanwhile is not
        for f in (f for f in (self.root / "manifests").iterdir() if is_snapshot_id(f.name)):
            with contextlib.suppress(FileNotFoundError):
                stats.append((f.name, f.lstat()))
        out = [ManifestInfo(name, st.st_size, datetime.fromtimestamp(st.st_mtime, timezone.utc)) for name, st in stats]
        return sorted(out, key=lambda m: (m.created_at, m.id))

    # -- names ----------------------------------------------------------------------------------
    def get_ref(self, name: str) -> str | None:
        return read_ref_file(self.root / "refs" / check_name(name))

    def set_ref(self, name: str, snapshot_id: str) -> None:
        self._write(self.root / "refs" / check_name(name), snapshot_id.encode() + b"\n", durable=True)

    def delete_ref(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.root / "refs" / check_name(name)).unlink()

    def list_refs(self) -> dict[str, str]:
        out = {}
        for f in sorted((self.root / "refs").iterdir()):
            with contextlib.suppress(IntegrityError):     # a FIFO or directory planted there: no name
                out[f.name] = read_ref_file(f) or ""
        return out

    def clean_tmp(self, older_than_s: float) -> int:
        """Remove temporary files older than the grace period a crashed writer left: in tmp/, and
        the dot names beside chunks (where chunks are written first)."""
        cutoff, n = time.time() - older_than_s, 0
        # Never through a link: in a store on a shared path, a tmp/ or fan-out directory that leads
        # elsewhere (someone's home) would have gc remove that directory's old files.
        tmp = [] if (self.root / "tmp").is_symlink() else list((self.root / "tmp").iterdir())
        leftovers = [*tmp, *(f for d in _real_dirs(self.root / "chunks") for f in d.glob(".*"))]
        for f in leftovers:
            with contextlib.suppress(OSError):
                if os.lstat(f).st_mtime < cutoff and not f.is_dir():
                    f.unlink()
                    n += 1
        return n


def _size(path: str) -> int | None:
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        return os.stat(path).st_size
    return None


def _real_dirs(path: Path) -> list[Path]:
    """The directories in `path`, links to one left out (gc must not reach outside the store)."""
    with os.scandir(path) as entries:
        return [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
