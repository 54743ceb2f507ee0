"""Progress of a snapshot create, as typed data for whoever shows it (the CLI, the stage phase)."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class SnapshotProgress:
    files_total: int
    bytes_total: int
    files_done: int = 0
    bytes_done: int = 0        # read and hashed, or known unchanged from the stat cache
    bytes_hashed: int = 0      # of bytes_done, what was actually read and hashed
    bytes_stored: int = 0      # new chunk bytes written to the store
    elapsed_s: float = 0.0
    finished: bool = False

    @property
    def hash_rate(self) -> float:
        """Bytes read and hashed per second so far."""
        return self.bytes_hashed / self.elapsed_s if self.elapsed_s > 0 else 0.0


ProgressCallback = Callable[[SnapshotProgress], None]


class Meter:
    """Counters the hashing threads add to; the callback sees a consistent copy at most every
    `interval_s` (and always at the end), from one thread at a time."""

    def __init__(self, callback: ProgressCallback | None, interval_s: float = 0.1):
        self.callback = callback
        self.interval_s = interval_s
        self.files_total = self.bytes_total = 0
        self.files_done = self.bytes_done = self.bytes_hashed = self.bytes_stored = 0
        self._t0 = time.monotonic()
        self._last = 0.0
        self._lock = threading.Lock()
        self._reporting = threading.Lock()

    def start(self, files_total: int, bytes_total: int) -> None:
        self.files_total, self.bytes_total = files_total, bytes_total
        self._t0 = time.monotonic()
        self.report(force=True)

    def hashed(self, n: int) -> None:
        with self._lock:
            self.bytes_hashed += n
            self.bytes_done += n
        self.report()

    def stored(self, n: int) -> None:
        with self._lock:
            self.bytes_stored += n

    def file_done(self, known_bytes: int = 0, files: int = 1) -> None:
        """A file (or `files` of them) finished; `known_bytes` were taken from the stat cache without reading."""
        with self._lock:
            self.files_done += files
            self.bytes_done += known_bytes
        if known_bytes:
            self.report()

    def snapshot(self, finished: bool = False) -> SnapshotProgress:
        with self._lock:
            return SnapshotProgress(self.files_total, self.bytes_total, self.files_done, self.bytes_done,
                                    self.bytes_hashed, self.bytes_stored, time.monotonic() - self._t0, finished)

    def report(self, force: bool = False, finished: bool = False) -> None:
        if self.callback is None:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval_s:
            return
        if not self._reporting.acquire(blocking=force):
            return                  # another thread is reporting right now: this tick is not needed
        try:
            self._last = now
            self.callback(self.snapshot(finished))
        finally:
            self._reporting.release()
