"""Waiting for GPU slots on team hosts: first come, first served, across everyone sharing the state.
(AWS leases waiting for capacity queue in the same table, fleet/providers/aws/capacity.py, each
provider's waiters among themselves.)

A lease that finds too few free slots (`fleet up --wait 10m`, `fleet sweep --wait 10m`) joins the
queue, a row in the shared state database (SQLite for one person, PostgreSQL for a team), and keeps
it fresh while it waits. Only the earliest live waiter tries to reserve, so a small request that
arrives later never starves a larger one already waiting. A waiter whose controller died stops
refreshing its row and no longer counts after STALE_S. `[queue] max_gpus_per_user` caps what one
user holds at once: a request past it waits on its user alone (it is skipped when deciding who is
next), so one person's sweep never holds up everyone else. `fleet queue` lists the rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from ...gpus import gpus_text
from ...models import utcnow

STALE_S = 30.0
_TABLE = ("CREATE TABLE IF NOT EXISTS lease_waits (lease_id TEXT PRIMARY KEY, owner TEXT NOT NULL, "
          "project TEXT NOT NULL, gpus INTEGER NOT NULL, machines INTEGER NOT NULL, provider TEXT NOT NULL, "
          "requested_at TEXT NOT NULL, seen_at TEXT NOT NULL, reason TEXT NOT NULL, "
          "over_limit INTEGER NOT NULL DEFAULT 0)")


@dataclass(frozen=True)
class Waiter:
    lease_id: str
    owner: str
    project: str
    gpus: int
    machines: int
    provider: str
    requested_at: str
    seen_at: str
    reason: str
    over_limit: int = 0      # 1: waits on its user's own limit, so it holds up nobody else
    position: int = 0


class WaitQueue:
    def __init__(self, db):
        self.db = db
        with db.transaction():
            db.execute(_TABLE)

    def join(self, *, lease_id: str, owner: str, project: str, gpus: int, machines: int, provider: str,
             reason: str) -> None:
        now = utcnow().isoformat()
        with self.db.transaction():
            self.db.execute("DELETE FROM lease_waits WHERE lease_id = ?", (lease_id,))
            self.db.execute("INSERT INTO lease_waits (lease_id, owner, project, gpus, machines, provider, "
                            "requested_at, seen_at, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (lease_id, owner, project, gpus, machines, provider, now, now, reason))

    def touch(self, lease_id: str, reason: str, *, over_limit: bool = False) -> None:
        with self.db.transaction():
            self.db.execute("UPDATE lease_waits SET seen_at = ?, reason = ?, over_limit = ? WHERE lease_id = ?",
                            (utcnow().isoformat(), reason, int(over_limit), lease_id))

    def leave(self, lease_id: str) -> None:
        with self.db.transaction():
            self.db.execute("DELETE FROM lease_waits WHERE lease_id = ?", (lease_id,))

    def waiting(self) -> list[Waiter]:
        """Live waiters, first come first; position 1 is the next to be served in its provider's
        line (each provider's waiters queue among themselves, and one held back by its own user's
        limit holds up nobody), as `ahead_of` counts."""
        fresh = (utcnow() - timedelta(seconds=STALE_S)).isoformat()
        rows = self.db.execute("SELECT * FROM lease_waits WHERE seen_at >= ? ORDER BY requested_at, lease_id",
                               (fresh,))
        out, ahead = [], {}
        for r in rows:
            out.append(Waiter(**{k: r[k] for k in Waiter.__dataclass_fields__ if k != "position"},
                              position=ahead.get(r["provider"], 0) + 1))
            if not r["over_limit"]:
                ahead[r["provider"]] = ahead.get(r["provider"], 0) + 1
        return out

    def ahead_of(self, lease_id: str, provider: str | None = None) -> int:
        """How many live waiters (of `provider`: a cloud waiting for capacity never holds up the
        team's hosts) came before this one and are not held back by their own user's limit (0: it
        is next)."""
        ahead = 0
        for w in self.waiting():
            if w.lease_id == lease_id:
                return ahead
            if provider is None or w.provider == provider:
                ahead += 0 if w.over_limit else 1
        return ahead


def held_gpus(db, owner: str) -> int:
    """GPU slots `owner` holds on the team's hosts now."""
    return int(db.execute("SELECT COUNT(*) AS n FROM gpu_slots WHERE released_at IS NULL AND owner = ?",
                          (owner,))[0]["n"])


def reserve_or_wait(db, plan, lease_id: str, requests: list[tuple[str, int]], capacity: dict[str, int],
                    watch, *, provider: str, max_gpus_per_user: int | None = None) -> list:
    """Reserve the slots now; with `watch.max_wait_s` (`--wait`), wait in the queue until they are
    free and every earlier waiter not held back by its own limit has been served, or the wait is
    over (CapacityError, exit 10). Cancelled (Ctrl-C) leaves the queue with nothing leased."""
    import time
    from ...errors import Cancelled, CapacityError
    from ..base import QueueStatus
    from . import slots as ssh_slots
    max_wait = watch.max_wait_s if watch is not None else None
    limit = max_gpus_per_user
    want = sum(n for _, n in requests)
    if limit is not None and want > limit:
        raise CapacityError(f"{gpus_text(want)} is more than one user may hold ({limit}, [queue] max_gpus_per_user)",
                            hint="ask for fewer GPUs")

    def over_limit() -> str | None:
        held = held_gpus(db, plan.user) if limit is not None else 0
        if limit is not None and held + want > limit:
            return (f"{plan.user} holds {held} GPU(s); {want} more would pass the per-user limit of {limit} "
                    "([queue] max_gpus_per_user)")
        return None

    def reserve() -> list:
        return ssh_slots.reserve(db, lease_id=lease_id, owner=plan.user, requests=requests, capacity=capacity)

    if not max_wait:
        if (why := over_limit()) is not None:
            raise CapacityError(why, hint="wait for your other leases to end, or use --wait")
        return reserve()
    queue, joined, start, said = WaitQueue(db), False, time.monotonic(), ("", 0.0)
    try:
        while True:
            limited = over_limit()
            # A newcomer while others wait queues behind them, even if slots are free this moment.
            ahead = queue.ahead_of(lease_id, provider) if joined else \
                sum(1 for w in queue.waiting() if w.provider == provider)
            if limited is not None:
                reason = limited
            elif ahead == 0:
                try:
                    return reserve()
                except CapacityError as exc:
                    if not capacity:
                        raise
                    reason = exc.message
            else:
                reason = f"{ahead} earlier request(s) waiting first"
            waited = time.monotonic() - start
            if waited >= max_wait:
                raise CapacityError(f"waited {waited:.0f}s for GPU slots: {reason}",
                                    hint="wait longer (--wait), or see `fleet queue` and `fleet status --all-users`")
            if not joined:
                queue.join(lease_id=lease_id, owner=plan.user, project=plan.project, gpus=plan.gpus,
                           machines=plan.machine_count, provider=provider, reason=reason)
                joined = True
            queue.touch(lease_id, reason, over_limit=limited is not None)
            if reason != said[0] or waited - said[1] >= 10:
                watch.on_queue(QueueStatus(job=lease_id, state="WAITING", reason=reason, waited_s=waited))
                said = (reason, waited)
            if watch.cancel.wait(1.0):
                raise Cancelled("cancelled while waiting for GPU slots; nothing was leased")
    finally:
        if joined:
            queue.leave(lease_id)
