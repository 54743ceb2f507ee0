"""The clocks a run measures time on besides the wall clock.

`elapsed()`: seconds that never step and go on while the computer sleeps (the machines' deadlines pass
on their own clocks meanwhile). `SteadyClock`: UTC as read when the run began, moved on by elapsed():
the run's meter bills by it, so the controller's wall clock stepping (NTP, a user's `date`) neither
bills the step nor, stepped back, lets the machines run unbilled and unbudgeted until it catches up.
"""
from __future__ import annotations

import sys
import time
from datetime import datetime, timedelta

# Linux's CLOCK_MONOTONIC stops while the computer sleeps, CLOCK_BOOTTIME does not; macOS's does not
# either (time.monotonic() there does).
_ELAPSED = getattr(time, "CLOCK_BOOTTIME", None) or (time.CLOCK_MONOTONIC if sys.platform == "darwin" else None)


def elapsed() -> float:
    return time.clock_gettime(_ELAPSED) if _ELAPSED is not None else time.monotonic()


class SteadyClock:
    """Callable like `utc_clock`. A time read from the wall clock (a deadline the heartbeat or the state
    gave) is brought onto it with `from_wall`: the same instant, as this clock names it."""

    def __init__(self):
        from .money.budget import utc_clock
        self._wall = utc_clock
        self._start, self._at = utc_clock(), elapsed()

    def __call__(self) -> datetime:
        return self._start + timedelta(seconds=elapsed() - self._at)

    def from_wall(self, instant: datetime) -> datetime:
        return instant + (self() - self._wall())
