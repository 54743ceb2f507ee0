"""The end of a run while its state database cannot be reached.

A budgeted run stopped by an outage (fleet/run/state_outage.py) ends while the database is most
likely still down, and a run that simply ends during one does too. The writes that record its end
(the lease released, the ledger closed, the reservation settled, the run final, its record) each
wait the outage out, retrying briefly, up to RECORD_WAIT_S for all of them together: one warning
says so. A write still failing after that raises StateUnavailable; the run's summary.json then says
what the state lacks (fleet/run/ending.py), and `fleet down` or the reaper settle the rest.
"""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Callable, TypeVar

from ..errors import StateUnavailable
from .state_outage import PROBE_PATIENCE_S, _duration

T = TypeVar("T")

RECORD_WAIT_S = 120.0   # long enough for a PostgreSQL restart or failover, a held SQLite lock
RETRY_EVERY_S = 2.0


class StateWait:
    """Runs a state write, waiting out StateUnavailable; the wait is shared by every write of one
    run's end, so the run ends at most RECORD_WAIT_S later than it would have."""

    def __init__(self, db: Any, events: Any, *, wait_s: float | None = None, sleep=None,
                 clock=time.monotonic, stop: threading.Event | None = None):
        self.db, self.events = db, events
        self.wait_s = RECORD_WAIT_S if wait_s is None else wait_s
        # `stop` (the run's `hurry`: a second Ctrl-C, a CI cancel past its grace) ends the wait at once.
        self.stop = stop or threading.Event()
        self.sleep = sleep or self.stop.wait
        self.clock = clock
        self.until: float | None = None           # set by the first failure
        self.slept_s = 0.0                        # waited so far (the machines were gone meanwhile)
        self.failed: StateUnavailable | None = None   # the last failure of a write given up on
        self.gave_up: list[str] = []              # what those writes would have recorded

    def _patience(self):
        # During an outage each try waits briefly for a lock, as the run's meter does: the wait's own
        # pace (RETRY_EVERY_S) is what bounds it, not SQLite's 30 s busy timeout per try.
        patience = getattr(self.db, "patience", None)
        return patience(PROBE_PATIENCE_S) if self.until is not None and patience else contextlib.nullcontext()

    def __call__(self, write: Callable[[], T], what: str = "") -> T:
        """write(), tried again while the database is unavailable; `what` it records, for the note
        in summary.json when it never could."""
        while True:
            try:
                with self._patience():
                    return write()
            except StateUnavailable as exc:
                now = self.clock()
                if self.until is None:
                    self.until = now + self.wait_s
                    self.events.warn(f"{exc.message}: waiting up to {_duration(self.wait_s)} for the state "
                                     "database to record the run")
                if now >= self.until or self.stop.is_set():
                    self.failed = exc
                    self.gave_up.append(what or "a write")
                    raise
                pause = min(RETRY_EVERY_S, self.until - now)
                self.sleep(pause)
                self.slept_s += pause


def at_once(write: Callable[[], T], what: str = "") -> T:
    """No waiting: a write outside a run's end."""
    return write()
