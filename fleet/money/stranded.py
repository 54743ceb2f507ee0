"""Open run segments whose controller died: spend no row records yet, counted by budget checks.

A controller appends a row per tick; killed (SIGKILL, a laptop's power), it leaves its segments
open, and its machines run on to the lease's recorded deadline (heartbeats no longer push it;
the watchdog ends them there). `fleet down` or `fleet reap` later closes the segments up to that
deadline. Until someone does, the ledger lacks that time, and from the deadline (plus a
heartbeat's slack) the run's reservation no longer holds it either (reservations.is_live): a
monthly budget would count less than was spent. So budget checks add, for each open segment of
an active lease past its deadline plus that slack, what it cost from its last row to the deadline.
Before that moment the reservation covers it: the two hand over at the same instant, never
counting the same time twice. A live controller moves the deadline and writes rows past it, so
it has nothing stranded.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from .budget import cost_micro
from .ledger import KEPT_SUFFIX, Ledger, parse_iso
from .reservations import DEADLINE_SLACK_S

_OPEN_RUN_SEGMENTS_SQL = (
    "SELECT g.lease_id, g.rate_micro, g.end_at,"
    " (SELECT MIN(f.start_at) FROM ledger f WHERE f.segment_id = g.segment_id) AS segment_start"
    f" FROM ledger g WHERE g.segment_id NOT LIKE '%{KEPT_SUFFIX}' AND g.kind <> 'close'"
    " AND g.seq = (SELECT MAX(m.seq) FROM ledger m WHERE m.segment_id = g.segment_id)")


def stranded_micro(ledger: Ledger, *, project: str | None = None, owner: str | None = None,
                   since: datetime | None = None) -> int:
    """What dead controllers' open segments cost from their last row up to their lease's deadline
    (with `since`, only the part after it), for live leases whose deadline passed a slack ago."""
    now = ledger.clock()
    deadlines = {}
    for row in ledger.db.execute("SELECT id, status, deadline FROM leases WHERE status IN ('active', 'leasing')"
                                 " AND deadline IS NOT NULL"):
        try:
            deadline = parse_iso(row["deadline"])
        except (TypeError, ValueError):
            continue
        # Before this, the controller may be alive and the run's reservation still holds the time.
        # A leasing lease's reservation lets go there only when its controller provably died
        # (reservations.py): otherwise it holds the time itself, until the max deadline.
        if now >= deadline + timedelta(seconds=DEADLINE_SLACK_S) and (
                row["status"] == "active" or _leasing_controller_gone(ledger.db, row["id"])):
            deadlines[row["id"]] = deadline
    if not deadlines:
        return 0   # the usual case: one indexed read of the live leases
    total = 0
    ids = sorted(deadlines)
    for first in range(0, len(ids), 500):   # SQLite caps bound parameters
        chunk = ids[first:first + 500]
        sql, params = _OPEN_RUN_SEGMENTS_SQL + f" AND g.lease_id IN ({','.join('?' * len(chunk))})", list(chunk)
        for column, value in (("g.project", project), ("g.owner", owner)):
            if value is not None:
                sql += f" AND {column} = ?"
                params.append(value)
        for row in ledger.db.execute(sql, params):
            try:
                start, last = parse_iso(row["segment_start"]), parse_iso(row["end_at"])
                end = deadlines[row["lease_id"]]
                frm = max(last, since) if since is not None else last
                if end > frm:
                    total += (cost_micro(int(row["rate_micro"]), (end - start).total_seconds())
                              - cost_micro(int(row["rate_micro"]), (frm - start).total_seconds()))
            except (TypeError, ValueError):
                continue   # a damaged row: `fleet ledger verify` reports it; a budget check must not crash
    return total


def _leasing_controller_gone(db, lease_id: str) -> bool:
    from .reservations import controller_gone
    return any(controller_gone(r["meta"]) for r in db.execute("SELECT meta FROM runs WHERE lease_id = ?", (lease_id,)))
