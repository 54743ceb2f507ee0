"""GPU-slot reservation on a team's SSH hosts: transactional, so a slot is never given twice.

Two guards, either of which alone would do:
  1. Row locks. The reservation runs in one transaction that first locks the candidate hosts' rows
     (SELECT … FOR UPDATE on PostgreSQL, in name order so two reservations cannot deadlock; on
     SQLite, BEGIN IMMEDIATE already serialises writers). Free slots are read *after* the locks.
  2. The partial unique index gpu_slots_active (host, slot) WHERE released_at IS NULL: the database
     itself refuses a second active reservation of a slot.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Sequence

from ...errors import CapacityError
from ...models import utcnow
from ...state.db import ConstraintViolation


@dataclass(frozen=True)
class Placement:
    machine_id: str
    host: str
    slots: tuple[int, ...]


def _free_slots(capacity: int, used: set[int]) -> list[int]:
    return [s for s in range(capacity) if s not in used]


def place(requests: list[tuple[str, int]], capacity: dict[str, int],
          used: dict[str, set[int]]) -> list[Placement] | None:
    """Best fit: each machine (largest first) goes to the host with the fewest free slots that still
    fit it, so large requests later still find a whole host. None if any machine does not fit."""
    free = {h: _free_slots(c, used.get(h, set())) for h, c in capacity.items()}
    out = []
    for machine_id, need in sorted(requests, key=lambda r: -r[1]):
        fits = [h for h in sorted(free) if len(free[h]) >= need]
        if not fits:
            return None
        host = min(fits, key=lambda h: (len(free[h]), h))
        taken, free[host] = free[host][:need], free[host][need:]
        out.append(Placement(machine_id, host, tuple(taken)))
    order = {m: i for i, (m, _) in enumerate(requests)}
    return sorted(out, key=lambda p: order[p.machine_id])


def reserve(db, *, lease_id: str, owner: str, requests: list[tuple[str, int]],
            capacity: dict[str, int], attempts: int = 3) -> list[Placement]:
    """Reserve `need` slots for each (machine_id, need) on hosts with `capacity` (name → GPU count).

    Raises CapacityError (exit code 10) naming what is free when the request cannot be met now.
    """
    if not capacity:
        raise CapacityError("no SSH host is up with GPUs to lease",
                            hint="see `fleet hosts ls`; add hosts with `fleet hosts add` or [[hosts]]")
    names = sorted(capacity)
    marks = ",".join("?" * len(names))
    for attempt in range(attempts):
        try:
            with db.transaction():
                db.lock_rows(f"SELECT name FROM hosts WHERE name IN ({marks}) ORDER BY name", names)
                reclaim_dead(db, names)
                used: dict[str, set[int]] = {}
                for r in db.execute(f"SELECT host, slot FROM gpu_slots WHERE released_at IS NULL"
                                    f" AND host IN ({marks})", names):
                    used.setdefault(r["host"], set()).add(r["slot"])
                placements = place(requests, capacity, used)
                if placements is None:
                    raise CapacityError(_refusal(requests, capacity, used),
                                        hint="wait for a lease to end (`fleet status --all-users`), or ask for fewer")
                now = utcnow().isoformat()
                db.executemany(
                    "INSERT INTO gpu_slots (host, slot, lease_id, machine_id, owner, reserved_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    [(p.host, s, lease_id, p.machine_id, owner, now) for p in placements for s in p.slots])
                record_user(db, owner, now)
                return placements
        except ConstraintViolation:
            # Only reachable if something bypassed the locks; the index refused it, so try again.
            if attempt == attempts - 1:
                raise CapacityError("GPU slots were taken concurrently; try again") from None
    raise AssertionError("unreachable")


def reclaim_dead(db, hosts: list[str]) -> int:
    """Free slots still held by leases that cannot be running: released/expired ones, and any past
    its hard max deadline (its watchdog ended it by then, even if its controller died and nobody
    ran `fleet down`). Without this a crashed controller would hold GPUs until someone noticed."""
    now = utcnow().isoformat()
    marks = ",".join("?" * len(hosts))
    dead = ("SELECT id FROM leases WHERE status IN ('released', 'expired', 'failed') OR max_deadline < ?")
    # A slot held past its lease's release (free(held=...)) waits for its machine's deadline.
    where = (f"released_at IS NULL AND host IN ({marks}) AND lease_id IN ({dead})"
             " AND (held_until IS NULL OR held_until < ?)")
    count = db.execute(f"SELECT COUNT(*) AS n FROM gpu_slots WHERE {where}", [*hosts, now, now])[0]["n"]
    if count:
        db.execute(f"UPDATE gpu_slots SET released_at = ? WHERE {where}", [now, *hosts, now, now])
    return count


def _refusal(requests: list[tuple[str, int]], capacity: dict[str, int], used: dict[str, set[int]]) -> str:
    need = sorted({n for _, n in requests})
    what = (f"{len(requests)} machine(s) × {need[0]} GPU(s)" if len(need) == 1
            else " + ".join(str(n) for _, n in requests) + " GPUs")
    free = ", ".join(f"{h} {capacity[h] - len(used.get(h, set()))}/{capacity[h]}" for h in sorted(capacity))
    return f"not enough free GPU slots for {what}: free now {free}"


def record_user(db, name: str, now: str | None = None) -> None:
    now = now or utcnow().isoformat()
    db.execute("INSERT INTO users (name, first_seen_at, last_seen_at) VALUES (?, ?, ?)"
               " ON CONFLICT (name) DO UPDATE SET last_seen_at = excluded.last_seen_at", (name, now, now))


def free(db, lease_id: str, machine_ids: list[str] | None = None, *, held: Sequence[str] = (),
         held_until: datetime | None = None) -> int:
    """Release a lease's slots (all, or those of some machines). Idempotent; returns how many.
    `held`: machines whose processes may still run on their GPUs (their host did not answer): their
    slots stay taken until `held_until`, their watchdog's deadline (reclaim_dead frees them then)."""
    # A slot held by an earlier release stays held: its machine's processes may still run.
    where, params = "lease_id = ? AND released_at IS NULL AND (held_until IS NULL OR held_until < ?)", \
        [lease_id, utcnow().isoformat()]
    if machine_ids is not None:
        if not machine_ids:
            return 0
        where += " AND machine_id IN (" + ",".join("?" * len(machine_ids)) + ")"
        params += machine_ids
    held = [m for m in held if machine_ids is None or m in machine_ids]
    with db.transaction():
        if held and held_until is not None:
            marks = ",".join("?" * len(held))
            db.execute(f"UPDATE gpu_slots SET held_until = ? WHERE {where} AND machine_id IN ({marks})",
                       [held_until.astimezone(timezone.utc).isoformat(), *params, *held])
            where += f" AND machine_id NOT IN ({marks})"
            params += held
        count = db.execute(f"SELECT COUNT(*) AS n FROM gpu_slots WHERE {where}", params)[0]["n"]
        db.execute(f"UPDATE gpu_slots SET released_at = ? WHERE {where}", [utcnow().isoformat(), *params])
    return count


def active(db, lease_id: str | None = None) -> list[dict]:
    if lease_id:
        return db.execute("SELECT host, slot, lease_id, machine_id, owner, reserved_at FROM gpu_slots"
                          " WHERE released_at IS NULL AND lease_id = ? ORDER BY host, slot", (lease_id,))
    return db.execute("SELECT host, slot, lease_id, machine_id, owner, reserved_at FROM gpu_slots"
                      " WHERE released_at IS NULL ORDER BY host, slot")
