"""Content-defined chunking (compiled FastCDC) and hashing of files, at the speed of the disk.

Cut points come from `pyfastcdc` (FastCDC 2020, gear hash, Cython with the GIL released), with
fixed parameters: they decide every chunk boundary, so they are part of the store format (manifest
format 3: min 128 KiB / avg 256 KiB / max 1 MiB; format 2 cut min 256 KiB / avg 1 MiB / max 4 MiB
and format 1 used a pure-Python windowed hash: both are still read, never written). The sizes are a
trade: a change inside a large file costs the changed bytes plus about one chunk on the wire (about
1.9x for 2 MiB rewritten at format 2's sizes, 1.3x at these), against one store file per chunk. Chunk ids
and file hashes stay sha256: the machine side verifies every chunk with the standard library only,
and hashlib's sha256 uses the CPU's SHA extensions where it has them (see `scripts/bench/snapshot.py`).

Files are read with large `readinto` calls into one reused buffer (no mmap: mapped pages count
towards the process's resident memory, and a 10 GiB file would be 10 GiB of RSS), so memory per
reader is bounded by MAX_SIZE * 2 whatever the file size.
"""
from __future__ import annotations

import errno
import hashlib
import io
import os
import threading
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator

MIN_SIZE = 128 * 1024
AVG_SIZE = 256 * 1024
MAX_SIZE = 1024 * 1024
NORMALIZATION = 1
CHUNKER = "fastcdc2020/min128k/avg256k/max1m/nc1"   # recorded in the store's format file
READ_SIZE = 8 * 1024 * 1024
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

_local = threading.local()


def _cdc():
    """One chunker per thread (pyfastcdc documents its objects as not safe to share)."""
    cdc = getattr(_local, "cdc", None)
    if cdc is None:
        from pyfastcdc import FastCDC
        cdc = _local.cdc = FastCDC(AVG_SIZE, min_size=MIN_SIZE, max_size=MAX_SIZE,
                                   normalized_chunking=NORMALIZATION)
    return cdc


def chunk_views(f: BinaryIO) -> Iterator[memoryview]:
    """The chunks of a binary stream as views into one reused buffer: each view is valid only until
    the next one is produced (hash or write it before asking for more)."""
    reader = f if isinstance(f, io.FileIO) else _Reader(f)
    for chunk in _cdc().cut_stream(reader):
        yield chunk.data


def chunk_stream(f: BinaryIO) -> Iterator[bytes]:
    """The chunks of a binary stream as independent bytes; the same bytes always give the same chunks."""
    for view in chunk_views(f):
        yield bytes(view)


def chunk_bytes(data: bytes) -> list[bytes]:
    return [bytes(c.data) for c in _cdc().cut_buf(data)]


@dataclass(frozen=True)
class FileDigest:
    sha256: str                          # the whole content's hash ("" when not asked for)
    size: int
    chunks: tuple[tuple[str, int], ...]  # (chunk sha256, length) in order ( () when not asked for)


ChunkSink = Callable[[str, memoryview], None]   # (chunk id, bytes): store it before returning


def digest_stream(f: BinaryIO, sink: ChunkSink | None = None, *, size_hint: int = -1,
                  whole: bool = True, on_bytes: Callable[[int], None] | None = None) -> FileDigest:
    """Chunk and hash a stream in one pass; `sink` gets every chunk (to store it).

    A stream that fits in one chunk (size_hint <= MIN_SIZE, or a short stream) is hashed once: its
    chunk id is its whole hash. `whole=False` skips the whole-content hash (a caller computing it in
    another thread, see `hash_whole`)."""
    if 0 <= size_hint <= MIN_SIZE:
        data = f.read()
        if len(data) <= MIN_SIZE:    # the chunker cuts nothing below MIN_SIZE: one chunk, or none
            if not data:
                return FileDigest(EMPTY_SHA256, 0, ())
            h = hashlib.sha256(data).hexdigest()
            if sink is not None:
                sink(h, memoryview(data))
            if on_bytes:
                on_bytes(len(data))
            return FileDigest(h, len(data), ((h, len(data)),))
        f = _Prefixed(data, f)       # it grew since it was stat'ed: chunk it like any other
    hasher = None
    chunks: list[tuple[str, int]] = []
    size = 0
    for view in chunk_views(f):
        n = len(view)
        one = hashlib.sha256(view)
        h = one.hexdigest()
        if whole:
            # The first chunk's hash state is the whole hash's state after that chunk: copy, not re-hash.
            if hasher is None:
                hasher = one.copy()
            else:
                hasher.update(view)
        if sink is not None:
            sink(h, view)
        chunks.append((h, n))
        size += n
        if on_bytes:
            on_bytes(n)
    if not whole:
        return FileDigest("", size, tuple(chunks))
    sha = hasher.hexdigest() if hasher is not None else EMPTY_SHA256
    return FileDigest(sha, size, tuple(chunks))


def hash_whole(f: BinaryIO) -> tuple[str, int]:
    """sha256 and length of a stream, read in large pieces into one reused buffer."""
    hasher = hashlib.sha256()
    buf = bytearray(READ_SIZE)
    view = memoryview(buf)
    size = 0
    while True:
        n = f.readinto(view)
        if not n:
            return hasher.hexdigest(), size
        hasher.update(view[:n])
        size += n


def open_for_reading(path: str) -> BinaryIO:
    """An unbuffered reader (readinto goes straight into our buffer), with the kernel told to read ahead.
    Only a regular file, never through a link: the scan saw one, and what stands there now may have
    been swapped since (a FIFO blocked this open for ever, a link to /dev/zero read without end)."""
    from ..regular_files import NOT_REGULAR, open_regular
    try:
        fd = open_regular(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(exc.errno, "no longer the regular file it was (now a symbolic link)") from None
        if exc.errno == errno.EINVAL and str(exc.strerror).startswith(NOT_REGULAR):
            now = exc.strerror[len(NOT_REGULAR):].strip(" ()")
            raise OSError(errno.EINVAL, f"no longer the regular file it was (now {now})") from None
        raise
    if hasattr(os, "posix_fadvise"):
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        except OSError:
            pass
    return io.FileIO(fd, "rb", closefd=True)


class _Prefixed(io.RawIOBase):
    """`head` then the rest of `tail`: a stream we already read the start of."""

    def __init__(self, head: bytes, tail: BinaryIO):
        self.head, self.tail, self.pos = memoryview(head), tail, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self.pos < len(self.head):
            n = min(len(b), len(self.head) - self.pos)
            b[:n] = self.head[self.pos:self.pos + n]
            self.pos += n
            return n
        return _Reader(self.tail).readinto(b)


class _Reader:
    """`readinto` for any binary stream: its own where it has a working one, else via `read`
    (a RawIOBase that only overrides read, a tar member, a socket file)."""

    def __init__(self, f: BinaryIO):
        self.f = f
        self.native = hasattr(f, "readinto")

    def readinto(self, b) -> int:
        if self.native:
            try:
                return self.f.readinto(b) or 0
            except (NotImplementedError, io.UnsupportedOperation):
                self.native = False
        data = self.f.read(len(b))
        b[:len(data)] = data
        return len(data)
