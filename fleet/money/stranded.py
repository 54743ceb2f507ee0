"""Open run segments whose controller died: spend no row records yet, counted by budget checks.

A live controller appends a row to each of its segments at least every PERSIST_EVERY_S, from the
whole lease to the release (fleet/run/budget.py keeps ticking in every phase). Killed (SIGKILL, a
laptop's power), it leaves its segments open, and its machines run on to the lease's recorded
deadline: a fresh lease's at most one heartbeat TTL later, a kept lease's at its kept deadline,
hours away. `fleet down` or `fleet reap` later closes the segments up to that deadline; until
someone does, the ledger lacks that time. So budget checks add, for each open run segment of an
active lease whose last row is older than STALE_S (or whose deadline passed a slack ago), what it
cost from its last row up to min(now, the deadline). The run's reservation is netted by the same
amount (stranded_by_run), as by its ledger rows, so the time is counted once and spend plus
reservation never fall below what was reserved: a live run whose rows only look silent (the
writer's clock behind the checker's) keeps its claim. A leasing lease counts only once its controller provably died and its
deadline passed (its reservation holds the time until then).
"""
from __future__ import annotations

from datetime import datetime, timedelta

from .budget import cost_micro
from .ledger import KEPT_SUFFIX, Ledger, iso, parse_iso
from .reservations import DEADLINE_SLACK_S, STALE_S, controller_gone

# Per open run segment of the given leases: its start, its last row's end and rate.
_OPEN_RUN_SEGMENTS_SQL = (
    "SELECT g.lease_id, g.rate_micro, g.end_at,"
    " (SELECT MIN(f.start_at) FROM ledger f WHERE f.segment_id = g.segment_id) AS segment_start"
    f" FROM ledger g WHERE g.segment_id NOT LIKE '%{KEPT_SUFFIX}' AND g.kind <> 'close'"
    " AND g.seq = (SELECT MAX(m.seq) FROM ledger m WHERE m.segment_id = g.segment_id)")


def stranded_micro(ledger: Ledger, *, project: str | None = None, owner: str | None = None,
                   since: datetime | None = None) -> int:
    """What dead controllers' open segments cost from their last row up to min(now, their lease's
    deadline); with `since`, only the part after it."""
    now = ledger.clock()
    slack = timedelta(seconds=DEADLINE_SLACK_S)
    leases: dict[str, tuple[datetime, bool]] = {}   # lease id -> (deadline, counted whatever its rows' age)
    for row in ledger.db.execute("SELECT id, status, deadline FROM leases WHERE status IN ('active', 'leasing')"
                                 " AND deadline IS NOT NULL"):
        try:
            deadline = parse_iso(row["deadline"])
        except (TypeError, ValueError):
            continue
        past = now >= deadline + slack
        if row["status"] == "active":
            leases[row["id"]] = (deadline, past)
        elif past and _leasing_controller_gone(ledger.db, row["id"]):
            leases[row["id"]] = (deadline, True)
    if not leases:
        return 0   # the usual case: one indexed read of the live leases
    stale_before = now - timedelta(seconds=STALE_S)
    total = 0
    ids = sorted(leases)
    for first in range(0, len(ids), 500):   # SQLite caps bound parameters
        chunk = ids[first:first + 500]
        # Only segments whose last row is old enough, or on a lease past its deadline: fresh ones
        # (their controller ticks) are left out by the SQL, before any row is parsed here.
        past = [i for i in chunk if leases[i][1]]
        sql = (_OPEN_RUN_SEGMENTS_SQL + f" AND g.lease_id IN ({','.join('?' * len(chunk))})"
               + f" AND (g.end_at < ?{''.join(' OR g.lease_id = ?' for _ in past)})")
        params: list = [*chunk, iso(stale_before), *past]
        for column, value in (("g.project", project), ("g.owner", owner)):
            if value is not None:
                sql += f" AND {column} = ?"
                params.append(value)
        for row in ledger.db.execute(sql, params):
            try:
                deadline, past = leases[row["lease_id"]]
                start, last = parse_iso(row["segment_start"]), parse_iso(row["end_at"])
                if not past and last >= stale_before:
                    continue   # its controller wrote lately: alive, and its reservation holds the rest
                end = min(now, deadline)
                frm = max(last, since) if since is not None else last
                if end > frm:
                    total += (cost_micro(int(row["rate_micro"]), (end - start).total_seconds())
                              - cost_micro(int(row["rate_micro"]), (frm - start).total_seconds()))
            except (TypeError, ValueError):
                continue   # a damaged row: `fleet ledger verify` reports it; a budget check must not crash
    return total


def stranded_by_run(db, held: list[tuple[str, str]], now: datetime) -> dict[tuple[str, str], int]:
    """For each (lease, run) of a live reservation on an active lease: what stranded_micro counts of
    that run's open segments (its attempts `<run>-aN` included). The reservation is netted by it, as
    by the run's ledger rows: spend and reservation together never fall below what it reserved, and
    a live run whose rows only look silent (a checker's clock ahead of its own) loses nothing."""
    out: dict[tuple[str, str], int] = {}
    stale_before = now - timedelta(seconds=STALE_S)
    for lease_id, run_id in held:
        rows = db.execute("SELECT deadline FROM leases WHERE id = ? AND status = 'active'", (lease_id,))
        try:
            deadline = parse_iso(rows[0]["deadline"]) if rows and rows[0]["deadline"] else None
        except (TypeError, ValueError):
            deadline = None
        if deadline is None:
            continue
        past = now >= deadline + timedelta(seconds=DEADLINE_SLACK_S)
        total = 0
        for row in db.execute(_OPEN_RUN_SEGMENTS_SQL + " AND g.lease_id = ? AND (g.run_id = ? OR g.run_id LIKE ?)",
                              (lease_id, run_id, f"{run_id}-a%")):
            try:
                start, last = parse_iso(row["segment_start"]), parse_iso(row["end_at"])
                if not past and last >= stale_before:
                    continue
                end, rate = min(now, deadline), int(row["rate_micro"])
                if end > last:
                    total += (cost_micro(rate, (end - start).total_seconds())
                              - cost_micro(rate, (last - start).total_seconds()))
            except (TypeError, ValueError):
                continue
        if total:
            out[(lease_id, run_id)] = total
    return out


def _leasing_controller_gone(db, lease_id: str) -> bool:
    return any(controller_gone(r["meta"]) for r in db.execute("SELECT meta FROM runs WHERE lease_id = ?", (lease_id,)))
