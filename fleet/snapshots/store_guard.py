"""Writers and `gc` of one store never overlap: markers in the store itself, file:// and S3 alike.

The race this closes: a writer (snapshot create, checkpoint upload, outputs, a code snapshot) finds a
chunk already in the store (unreferenced, left by an earlier run) and does not write it; `gc`, which
read the manifests before the writer's was there, deletes that chunk as unreferenced; the writer's
manifest then names a missing chunk. Chunk age (`gc --grace`) does not help: the chunk is old.

Protocol (Dekker's, over a strongly consistent store: a local filesystem, and S3, whose listings
show every object written before them):
- a writer puts a marker `locks/write-<ns>-<host>-<pid>-<random>` before its first presence check,
  then lists `locks/`: a fresh `gc-…` marker there and it takes its own marker back and waits
  (FLEET_STORE_GC_WAIT seconds, default 60) for that gc to end, then fails with one line;
- gc puts `locks/gc-…` first, then lists `locks/`: a fresh `write-…` marker there and it takes its
  own back and stops with one line ("a snapshot write is in progress on this store (…); try again
  later"), deleting nothing;
- each removes its marker when done (the writer after its manifest is written).
Whichever of the two lists second sees the other's marker, so a writer's presence checks and a
gc's deletions never interleave.

A marker is fresh for MARKER_TTL_S after it was last written, by the store's clock (its mtime or
LastModified, compared with the lister's own marker's, so no two computers' clocks are compared).
A crashed process's marker therefore stops counting after that (gc removes such stale markers). A
live writer or gc rewrites its marker at most every REFRESH_S, on its next store call; one that made
no call for longer than LAPSE_S (a stalled network) may have been taken for dead: a gc stops then,
and a writer checks that every chunk its manifest names is still there before publishing it.
No lock server, no fcntl (a file:// store may be on NFS, shared by several computers).
"""
from __future__ import annotations

import atexit
import math
import os
import re
import secrets
import socket
import threading
import time
from typing import Callable, Iterable

from ..errors import EnvironmentProblem, IntegrityError

MARKER_TTL_S = 600.0          # a marker not rewritten for this long belongs to a crashed process
REFRESH_S = 60.0              # a live holder rewrites its marker at most this often
LAPSE_S = MARKER_TTL_S - 120  # not rewritten for this long: others may take it for stale
GC_WAIT_S = 60.0              # default of FLEET_STORE_GC_WAIT: how long a writer waits for a gc
_POLL_S = 1.0
_live: set["_Marker"] = set()     # removed at exit if their holder never got to (an exception, ^C)
_live_lock = threading.Lock()


class _LocalMarkers:
    def __init__(self, root) -> None:
        self.dir = os.path.join(str(root), "locks")
        self.where = str(root)

    def _ready(self) -> None:
        # Never through a link: a shared store's locks/ leading elsewhere would have gc delete there.
        if os.path.islink(self.dir):
            raise EnvironmentProblem(f"snapshot store {self.where}: locks/ is a link; refusing to use it")
        # The store's own modes (like chunks/): every user sharing a store must be able to announce.
        os.makedirs(self.dir, exist_ok=True)

    def put(self, name: str, body: bytes) -> None:
        try:
            self._ready()
            fd = os.open(os.path.join(self.dir, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
            try:
                os.write(fd, body)
            finally:
                os.close(fd)
        except OSError as exc:
            raise EnvironmentProblem(f"cannot write to snapshot store at {self.where}: {exc.strerror or exc}") from None

    def list(self) -> dict[str, float]:
        if os.path.islink(self.dir):
            return {}
        out = {}
        try:
            with os.scandir(self.dir) as entries:
                for e in entries:
                    try:
                        out[e.name] = e.stat(follow_symlinks=False).st_mtime
                    except FileNotFoundError:
                        pass
        except FileNotFoundError:
            pass
        return out

    def delete(self, name: str) -> None:
        try:
            os.unlink(os.path.join(self.dir, name))
        except FileNotFoundError:
            pass


class _S3Markers:
    def __init__(self, store) -> None:
        self.store = store

    def put(self, name: str, body: bytes) -> None:
        self.store._put(self.store._key("locks", name), body, "announce itself in the store (locks/)")

    def list(self) -> dict[str, float]:
        return {o["Key"].rsplit("/", 1)[-1]: o["LastModified"].timestamp() for o in self.store._list("locks")}

    def delete(self, name: str) -> None:
        self.store._delete(self.store._key("locks", name))


def _backend(store):
    if hasattr(store, "bucket") and hasattr(store, "_list"):
        return _S3Markers(store)
    if hasattr(store, "root"):
        return _LocalMarkers(store.root)
    return None          # another Store (a test's): nothing to coordinate with


_NAME = re.compile(r"^(write|gc)-(\d+)-(.+)-(\d+)-([0-9a-f]+)\Z")


def _who(name: str, age: float) -> str:
    m = _NAME.match(name)
    host, pid = (m.group(3), m.group(4)) if m else ("?", "?")
    host = re.sub(r"[^A-Za-z0-9._-]", "?", host)[:60]   # anyone may name a file there: no control characters
    return f"host {host}, pid {pid}, announced {age:.0f}s ago"


class _Marker:
    """One holder's marker: written, rewritten while in use, removed at the end."""

    def __init__(self, store, kind: str) -> None:
        self.store, self.kind, self.backend = store, kind, _backend(store)
        host = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:40] or "host"
        self.name = f"{kind}-{time.time_ns()}-{host}-{os.getpid()}-{secrets.token_hex(4)}"
        self.written_at: float | None = None     # monotonic, taken before the last write began
        self.lapsed = False
        self._lock = threading.Lock()

    def write(self) -> None:
        if self.backend is None:
            return
        began = time.monotonic()
        try:
            self.backend.put(self.name, b"fleet store marker\n")
        except EnvironmentProblem:
            # On a full disk the marker's file is created but its body not written: left there, it
            # made `fleet snapshot gc` (which the store-full error itself suggests) refuse for
            # MARKER_TTL_S as "a snapshot write is in progress". A first write takes it back; a
            # failed rewrite keeps it, its holder still working.
            if self.written_at is None:
                try:
                    self.backend.delete(self.name)
                except Exception:      # noqa: BLE001 — it expires after MARKER_TTL_S in any case
                    pass
            raise
        self.written_at = began
        with _live_lock:
            _live.add(self)

    def others(self, kind: str) -> list[str]:
        """Fresh markers of `kind` other than this one ("who, how long ago" each), by the store's clock."""
        if self.backend is None:
            return []
        found = self.backend.list()
        now = found.get(self.name, time.time())
        out = []
        for name, mtime in sorted(found.items()):
            # |age|: one stamped far ahead (planted, or set by a wrong clock) counts no longer than a real one
            if name != self.name and name.startswith(kind + "-") and abs(now - mtime) < MARKER_TTL_S:
                out.append(_who(name, max(0.0, now - mtime)))
        return out

    def touch(self) -> None:
        """On each store call: rewrite the marker when REFRESH_S have passed (cheap otherwise)."""
        at = self.written_at
        if at is None or time.monotonic() - at < REFRESH_S:
            return
        with self._lock:
            if self.written_at is not None and time.monotonic() - self.written_at >= REFRESH_S:
                if time.monotonic() - self.written_at >= LAPSE_S:
                    self.lapsed = True
                self.write()

    def remove(self) -> None:
        with _live_lock:
            _live.discard(self)
        if self.backend is not None and self.written_at is not None:
            self.written_at = None
            try:
                self.backend.delete(self.name)
            except Exception:      # noqa: BLE001 — it expires after MARKER_TTL_S in any case
                pass


def _gc_wait() -> float:
    """FLEET_STORE_GC_WAIT: seconds a write waits for a gc to end. "inf" waited for ever behind a gc
    that may run for hours, and "nan" or "-5" were quietly taken for 0 (no wait): both are refused."""
    raw = os.environ.get("FLEET_STORE_GC_WAIT") or ""
    try:
        wait = float(raw) if raw else GC_WAIT_S
    except ValueError:
        wait = math.nan
    if not (math.isfinite(wait) and wait >= 0):
        raise EnvironmentProblem(f"FLEET_STORE_GC_WAIT={raw!r} is not a number of seconds "
                                 f"(give a finite number, 0 or more; default {GC_WAIT_S:g})")
    return wait


@atexit.register
def _remove_leftovers() -> None:
    for marker in list(_live):
        marker.remove()


class WriteGuard:
    """Held from a writer's first presence check until its manifest is written (see the module)."""

    def __init__(self, store) -> None:
        self.store = store
        self._marker: _Marker | None = None
        self._lock = threading.Lock()

    def begin(self) -> None:
        """Announce this write (once; later calls only refresh); wait for a gc in progress to end."""
        if self._marker is not None:
            self._marker.touch()
            return
        with self._lock:
            if self._marker is not None:
                return
            marker = _Marker(self.store, "write")
            wait = _gc_wait()
            end = time.monotonic() + wait
            while True:
                marker.write()
                gcs = marker.others("gc")
                if not gcs:
                    self._marker = marker
                    return
                marker.remove()
                if time.monotonic() >= end:
                    raise EnvironmentProblem(f"snapshot store {self.store.url} is being garbage-collected "
                                             f"({gcs[0]}); try again later")
                time.sleep(min(_POLL_S, max(0.0, end - time.monotonic())))

    touch = begin

    def before_publish(self, chunks: Callable[[], Iterable[str]]) -> None:
        """Just before the manifest is written: if this writer went quiet long enough to be taken
        for dead, announce it again and check that every chunk the manifest names (`chunks()`) is
        still there."""
        marker = self._marker
        if marker is None:
            return
        marker.touch()
        if not marker.lapsed:
            return
        marker.remove()
        self._marker = None
        self.begin()
        wanted = list(chunks())
        present = self.store.has_chunks(wanted)
        missing = [h for h in wanted if h not in present]
        if missing:
            raise IntegrityError(f"chunk {missing[0][:12]} left the store {self.store.url} while this snapshot "
                                 "was being written (it paused long enough for a gc to run); nothing was "
                                 "published", hint="run it again")

    def end(self) -> None:
        marker, self._marker = self._marker, None
        if marker is not None:
            marker.remove()

    def __enter__(self) -> "WriteGuard":
        self.begin()
        return self

    def __exit__(self, *exc) -> None:
        self.end()


class GuardedStore:
    """A store whose writes are announced: what every chunk writer uses. Its first presence check
    or chunk write announces the write (WriteGuard.begin), the manifest is checked before it is
    written (before_publish), `done()` ends the announcement. Everything else is the store's."""

    def __init__(self, store) -> None:
        self._store, self._guard = store, WriteGuard(store)

    @property
    def inner(self):
        """The store itself, for whoever reads what was written (announces nothing)."""
        return self._store

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    def has_chunks(self, hashes):
        if hashes:                 # asking about nothing (an empty checkpoint) announces nothing
            self._guard.begin()
        return self._store.has_chunks(hashes)

    def put_chunk(self, h: str, data) -> bool:
        self._guard.begin()
        return self._store.put_chunk(h, data)

    def put_manifest(self, snapshot_id: str, data: bytes) -> None:
        from .manifest import Manifest
        self._guard.before_publish(lambda: Manifest.from_bytes(data).chunk_ids())
        self._store.put_manifest(snapshot_id, data)

    def done(self) -> None:
        self._guard.end()


def guarded(store) -> GuardedStore:
    return store if isinstance(store, GuardedStore) else GuardedStore(store)


class GcGuard:
    """Held by gc while it decides and deletes: refused while a write is announced."""

    def __init__(self, store) -> None:
        self.store = store
        self._marker = _Marker(store, "gc")

    def __enter__(self) -> "GcGuard":
        self._marker.write()
        writers = self._marker.others("write")
        if writers:
            self._marker.remove()
            more = f" and {len(writers) - 1} more" if len(writers) > 1 else ""
            raise EnvironmentProblem(f"a snapshot write is in progress on this store ({writers[0]}{more}); "
                                     "try again later")
        self._remove_stale()
        return self

    def _remove_stale(self) -> None:
        """Markers of crashed processes: older than twice the TTL (well past counting)."""
        backend = self._marker.backend
        if backend is None:
            return
        found = backend.list()
        now = found.get(self._marker.name, time.time())
        for name, mtime in found.items():
            if _NAME.match(name) and abs(now - mtime) > 2 * MARKER_TTL_S:
                try:
                    backend.delete(name)
                except OSError:   # not a file, or another user's in a sticky locks/: it counts no more anyway
                    pass

    def touch(self) -> None:
        """On each step of gc: refresh the marker; stop if it went quiet long enough for writers to
        have taken it for dead (they may have trusted a chunk gc is about to delete)."""
        self._marker.touch()
        if self._marker.lapsed:
            raise EnvironmentProblem(f"gc of {self.store.url} stopped: it paused for over {LAPSE_S:.0f}s and "
                                     "writers may have started meanwhile; run it again")

    def __exit__(self, *exc) -> None:
        self._marker.remove()
