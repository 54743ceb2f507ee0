"""The heartbeat's calls into the state database, guarded.

The budget's deadline cap reads the ledger and each confirmed deadline is written to the lease.
Both run on the heartbeat's thread, where an exception ends the thread with a traceback and no more
beats, so the machines die at their deadline mid-run (found under load: a full disk during the
run). A failed call is a warning, once per streak; beats go on.
"""
from __future__ import annotations

import time
from typing import Any, Callable


class HeartbeatState:
    def __init__(self, ctx: Any, cap: Callable[[], float | None]):
        self.ctx, self._cap = ctx, cap
        self.last_cap: tuple[float, float] | None = None   # (cap, monotonic time it was computed)
        self.failing: set[str] = set()

    def _failed(self, what: str, exc: Exception) -> None:
        if what not in self.failing:   # once per streak, not every beat
            self.ctx.events.warn(f"could not {what} ({exc}); the heartbeat goes on")
        self.failing.add(what)

    def cap(self) -> float | None:
        try:
            value = self._cap()
        except Exception as exc:  # noqa: BLE001
            self._failed("recompute the budget's deadline cap", exc)
            if self.last_cap is None:
                return None
            value, at = self.last_cap   # the last cap known, counted down: never more than it allowed
            return max(0.0, value - (time.monotonic() - at))
        self.failing.discard("recompute the budget's deadline cap")
        if value is not None:
            self.last_cap = (value, time.monotonic())
        return value

    def record_deadline(self, deadline) -> None:
        try:
            self.ctx.state.set_lease_deadline(self.ctx.lease_id, deadline)
            self.failing.discard("record the lease's deadline")
        except Exception as exc:  # noqa: BLE001 — the machines hold their deadline themselves
            self._failed("record the lease's deadline", exc)
