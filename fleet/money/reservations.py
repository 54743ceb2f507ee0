"""Budget reservations: shared monthly budgets stay safe when several people lease at once.

A project's (or user's) monthly budget is shared by everyone's runs, on several laptops. Checking
"can what is left pay this lease's minimum billing?" and then leasing is a race: two commands both
read $10 left, both pass with a $6 minimum, and $12 gets spent. So the check and a *reservation*
are one transaction, under a lock on the budget scope:

- PostgreSQL: `pg_advisory_xact_lock` on a hash of each scope ("project:vision", "user:ana"),
  taken in a fixed order (no deadlock between a project locker and a user locker); released at
  commit. SQLite: `BEGIN IMMEDIATE` already lets one writer in at a time.
- Inside it: spent (the ledger, this month) + what other live reservations still hold; refuse if
  the remainder cannot pay the minimum billing; else insert this lease's reservation. It is
  committed before the lease is made, so the next command sees it.

What a reservation holds: `amount − what its run has put in its lease's ledger` (never below
zero), so a run's spend is never counted twice; what budget checks count of its silent open
segments (a dead controller's, stranded.py) nets it the same way. Only its run's rows: on a kept
lease, earlier runs' rows and the kept idle time are spend of their own (counted as spent, not
netted), and a concurrent run on it has its own reservation. A reservation made without a run id is netted by
its lease's rows (kept time aside) that started at or after it was made.

Its amount is the lease's estimated maximum cost (price × machines × max_duration), capped by the
run budget and by what is left, and never less than the minimum billing. A run without a per-run
budget therefore claims what it may spend in its max_duration, up to everything left in the
scope: set `budget =` per run to share a monthly budget between concurrent runs.

It stops holding money when (whichever comes first): its run ends (`settle`, from after_run);
its lease is no longer leasing/active (`fleet down`, the reaper); an active lease is past its
recorded deadline (a killed controller's machines end there, heartbeats no longer push it), and so
is a leasing one whose controller provably died; a leasing lease is past its max_deadline; or no
lease row appeared within PENDING_S of the reservation (the command died between the check and
recording the lease).

All times come from the injected clock; the liveness rule is a pure function, tested with a fake one.
"""
from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .budget import Clock, utc_clock
from .ledger import KEPT_SUFFIX, iso, parse_iso

PENDING_S = 120.0          # a reservation whose lease row never appears stops counting after this
DEADLINE_SLACK_S = 30.0    # an active lease's recorded deadline, plus a heartbeat's worth of slack
STALE_S = 60.0             # a run's open segments with no row this long count as stranded (stranded.py)
LIVE_LEASE_STATUSES = ("leasing", "active")


def scope_lock_key(kind: str, name: str) -> int:
    """A signed 64-bit advisory-lock key for one budget scope, the same in every fleet process."""
    digest = hashlib.blake2b(f"fleet budget scope\x1f{kind}\x1f{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def held_micro(amount_micro: int, spent_micro: int) -> int:
    """What a live reservation still keeps from others: the part its lease has not spent yet."""
    return max(0, amount_micro - max(0, spent_micro))


def reservation_amount(*, minimum_micro: int, estimate_micro: int, room_micro: int) -> int:
    """What to reserve: the estimated maximum cost, capped by the room the binding budget leaves
    (the run budget or what is left in the scope), never less than the minimum billing."""
    return max(minimum_micro, min(estimate_micro, room_micro))


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return parse_iso(str(value))
    except ValueError:
        return None   # an unreadable time: treat the bound as absent, never crash a lease


def _amount(value: Any) -> int | None:
    """A reservation's amount as stored; None for one no fleet writes (SQLite keeps whatever text a
    teammate's client put in the column): like an unreadable time, it must not end every budget check."""
    from ..state.documents import stored_number
    return stored_number(value, low=-sys.float_info.max, high=sys.float_info.max, default=None)


def is_live(*, now: datetime, created_at: datetime, expires_at: datetime, lease_status: str | None,
            lease_deadline: datetime | None = None, lease_max_deadline: datetime | None = None,
            pending_s: float = PENDING_S, slack_s: float = DEADLINE_SLACK_S) -> bool:
    """Whether a (not settled) reservation still holds money. `lease_status` None: no lease row yet."""
    if now >= expires_at:
        return False
    if lease_status is None:
        return now < created_at + timedelta(seconds=pending_s)
    if lease_status not in LIVE_LEASE_STATUSES:
        return False
    if lease_max_deadline is not None and now >= lease_max_deadline:
        return False
    if lease_status == "active" and lease_deadline is not None:
        return now < lease_deadline + timedelta(seconds=slack_s)
    return True   # leasing: machines may still be booting, bounded by max_deadline/expires_at


def controller_gone(run_meta: Any) -> bool:
    """The run's controller provably died (on this computer: same boot, pid, start time)."""
    import json
    from ..lost_runs import controller_alive
    try:
        meta = json.loads(run_meta) if isinstance(run_meta, str) else run_meta
    except ValueError:
        return False
    return isinstance(meta, dict) and controller_alive(meta.get("controller")) is False


@dataclass(frozen=True)
class Held:
    lease_id: str
    project: str
    owner: str
    amount_micro: int
    spent_micro: int

    @property
    def held_micro(self) -> int:
        return held_micro(self.amount_micro, self.spent_micro)


class Reservations:
    """Budget reservations in the state database (either store)."""

    def __init__(self, db, clock: Clock = utc_clock):
        self.db = db
        self.clock = clock

    def lock_scopes(self, *, project: str | None = None, owner: str | None = None) -> None:
        """Serialise budget checks of these scopes until the surrounding transaction ends."""
        if getattr(self.db, "dialect", "sqlite") != "postgresql":
            return   # SQLite: transaction() is BEGIN IMMEDIATE, one writer at a time already
        keys = []
        if project is not None:
            keys.append(scope_lock_key("project", project))
        if owner is not None:
            keys.append(scope_lock_key("user", owner))
        for key in sorted(keys):   # one global order: two lockers never wait on each other in a cycle
            self.db.execute("SELECT pg_advisory_xact_lock(?)", (key,))

    def live(self, *, project: str | None = None, owner: str | None = None, exclude_lease: str | None = None,
             exclude_run: str | None = None, now: datetime | None = None) -> list[Held]:
        """Live reservations in a scope (project and/or owner), with what their runs spent so far.
        `exclude_run`: a run on a kept lease leaves out its own reservation, not its lease's others."""
        now = now or self.clock()
        where, params = ["r.released_at IS NULL", "r.expires_at > ?"], [iso(now)]
        for column, value in (("r.project", project), ("r.owner", owner)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if exclude_lease is not None:
            where.append("r.lease_id <> ?")
            params.append(exclude_lease)
        if exclude_run is not None:
            where.append("(r.run_id IS NULL OR r.run_id <> ?)")
            params.append(exclude_run)
        rows = self.db.execute(
            "SELECT r.id, r.lease_id, r.run_id, r.project, r.owner, r.amount_micro, r.created_at, r.expires_at,"
            " l.status AS lease_status, l.deadline AS lease_deadline, l.max_deadline AS lease_max_deadline,"
            " u.meta AS run_meta"
            " FROM budget_reservations r LEFT JOIN leases l ON l.id = r.lease_id LEFT JOIN runs u ON u.id = r.run_id"
            f" WHERE {' AND '.join(where)}", params)
        alive = [r for r in rows if self._row_live(r, now) and _amount(r["amount_micro"]) is not None]
        spent = self._spent_since_reserved(sorted({r["id"] for r in alive}))
        stranded = self._stranded(alive, now)
        return [Held(r["lease_id"], r["project"], r["owner"], _amount(r["amount_micro"]),
                     spent.get(r["id"], 0) + stranded.get((r["lease_id"], r["run_id"]), 0)) for r in alive]

    def held_micro(self, **scope) -> int:
        return sum(h.held_micro for h in self.live(**scope))

    def _stranded(self, rows: list[dict], now: datetime) -> dict[tuple[str, str], int]:
        """What budget checks count as spend of each reservation's run beyond its ledger rows (its
        silent open segments, stranded.py): netted here too, so that time is counted once."""
        from .stranded import stranded_by_run
        pairs = sorted({(r["lease_id"], r["run_id"]) for r in rows if r["run_id"] and r["lease_status"] == "active"})
        return stranded_by_run(self.db, pairs, now) if pairs else {}

    @staticmethod
    def _row_live(row: dict, now: datetime) -> bool:
        created, expires = _time(row["created_at"]), _time(row["expires_at"])
        if created is None or expires is None:
            return False   # a damaged row must not block a budget forever
        status = row["lease_status"]
        if status == "leasing" and controller_gone(row.get("run_meta")):
            # Nobody drives the leasing on: what it made ends at the deadline it was given.
            status = "active"
        return is_live(now=now, created_at=created, expires_at=expires, lease_status=status,
                       lease_deadline=_time(row["lease_deadline"]), lease_max_deadline=_time(row["lease_max_deadline"]))

    def _spent_since_reserved(self, reservation_ids: list[int]) -> dict[int, int]:
        """Per reservation id: what its run put in its lease's ledger (see the module's docstring).
        start_at and created_at are both ledger.iso text (fixed-width UTC), so comparing them as
        strings compares instants."""
        out: dict[int, int] = {}
        for start in range(0, len(reservation_ids), 500):   # SQLite caps bound parameters
            chunk = reservation_ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for r in self.db.execute(
                    "SELECT r.id, COALESCE(SUM(g.cost_micro), 0) AS spent FROM budget_reservations r"
                    " JOIN ledger g ON g.lease_id = r.lease_id AND (g.run_id = r.run_id"
                    # its run's attempts too (`<run>-aN`: node 0 bills a resumed run's under those)
                    " OR g.run_id LIKE r.run_id || '-a%' OR r.run_id IS NULL"
                    f" AND g.start_at >= r.created_at AND g.segment_id NOT LIKE '%{KEPT_SUFFIX}')"
                    f" WHERE r.id IN ({marks}) GROUP BY r.id", chunk):
                out[r["id"]] = int(r["spent"] or 0)
        return out

    def reserve(self, *, lease_id: str, run_id: str | None, project: str, owner: str, amount_micro: int,
                minimum_micro: int, lifetime_s: float, now: datetime | None = None) -> None:
        """Insert this lease's reservation (call inside the transaction that checked the budget)."""
        now = now or self.clock()
        self.db.execute(
            "INSERT INTO budget_reservations (lease_id, run_id, project, owner, amount_micro, minimum_micro,"
            " created_at, expires_at) VALUES (?,?,?,?,?,?,?,?)",
            (lease_id, run_id, project, owner, int(amount_micro), int(minimum_micro), iso(now),
             iso(now + timedelta(seconds=max(0.0, lifetime_s)))))

    def settle(self, lease_id: str, spent_micro: int | None = None, at: datetime | None = None, *,
               run_id: str | None = None) -> int:
        """The run ended: its reservation stops counting (its cost is in the ledger). Returns rows settled.
        `run_id`: only that run's reservation; a concurrent run on the same kept lease keeps its own.
        None: every reservation on the lease (the lease itself is gone or was handed on)."""
        at = at or self.clock()
        where, params = "lease_id = ? AND released_at IS NULL", [lease_id]
        if run_id is not None:
            where += " AND run_id = ?"
            params.append(run_id)
        with self.db.transaction():
            before = self.db.execute(f"SELECT COUNT(*) AS n FROM budget_reservations WHERE {where}", params)
            self.db.execute(f"UPDATE budget_reservations SET released_at = ?, spent_micro = ? WHERE {where}",
                            [iso(at), spent_micro, *params])
        return int(before[0]["n"])
