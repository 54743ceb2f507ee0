"""A run while its state database cannot be reached (a lock held elsewhere, a PostgreSQL restart).

The meter goes on counting in memory and writes the whole outage to the ledger once the database
answers again (fleet/money/metering.py). This says so once per outage, and when it is over; and it
decides when an outage has lasted too long for a budgeted run to go on: other runs' budget checks
count this run's silent machines only up to the lease's recorded deadline, one heartbeat TTL
after the last beat recorded (beats come every third of a TTL), and this run no longer sees what
they spend. So a run with a budget is stopped (gracefully, so the stop ends before that deadline)
once the outage reaches two thirds of the TTL less the grace period and a margin. A run without a budget has no such promise to keep: it goes on.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

PROBE_PATIENCE_S = 1.0   # during an outage each try waits this long for a lock, not the usual 30 s


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    return f"{seconds // 60}m{seconds % 60:02d}s"


class StateOutage:
    def __init__(self, clock: Callable[[], datetime]):
        self.clock = clock                # the run's (fleet/run/budget.py): injectable, as the meter's
        self.since: datetime | None = None   # when the try that first failed began
        self.error: str = ""

    @property
    def ongoing(self) -> bool:
        return self.since is not None

    def failed(self, ctx: Any, began: datetime, exc: BaseException, bound_s: float | None) -> None:
        """A try that began at `began` could not reach the database."""
        self.error = exc.one_line() if hasattr(exc, "one_line") else str(exc)
        if self.since is not None:
            return
        self.since = began
        limit = ("" if bound_s is None else
                 f"; the run is stopped if it stays unreachable for {_duration(bound_s)}, as its budget "
                 "cannot be enforced without the ledger for longer")
        ctx.events.warn(f"{self.error}: the run goes on, its cost counted in memory and written to the ledger "
                        f"when the state database answers again{limit}")

    def reached(self, ctx: Any) -> None:
        if self.since is None:
            return
        gone = (self.clock() - self.since).total_seconds()
        self.since = None
        ctx.events.warn(f"state database reachable again after {_duration(gone)}: "
                        "the ledger has the run's cost for that time")

    def outlasted(self, bound_s: float | None) -> str | None:
        """The stop message once the outage has lasted `bound_s`, else None."""
        if self.since is None or bound_s is None:
            return None
        gone = (self.clock() - self.since).total_seconds()
        if gone < bound_s:
            return None
        return (f"state database unreachable for {_duration(gone)} ({self.error}): the budget cannot be enforced "
                "without its ledger for longer")


def outage_bound_s(ctx: Any, grace_s: float) -> float:
    """How long a budgeted run may go on without its state database (see the module's text). The
    heartbeat records a deadline every third of a TTL, so the last one recorded before the outage
    may lie only two thirds of a TTL past its start: the stop must end inside that."""
    ttl = float(ctx.offer.heartbeat_ttl_s or 0)
    return max(0.0, ttl * 2 / 3 - grace_s)
