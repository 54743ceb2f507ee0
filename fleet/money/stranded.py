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
writer's clock behind the checker's) keeps its claim. A leasing lease counts only once its
controller provably died and its deadline passed (its reservation holds the time until then).
"""
from __future__ import annotations

from datetime import datetime, timedelta

from .budget import cost_micro
from .ledger import KEPT_SUFFIX, Ledger, parse_iso
from .reservations import DEADLINE_SLACK_S, STALE_S, controller_gone


def open_segments_of(db, lease_ids: list[str], *, kept: bool = False, project: str | None = None,
                     owner: str | None = None) -> list[tuple[str, str, datetime, datetime, int]]:
    """(lease, run, segment start, last row's end, rate) of each open run segment of those leases
    (`kept`: each open kept segment instead, fleet/money/kept.py)."""
    out = []
    for seg, last in open_segment_rows(db, lease_ids, kept=kept, project=project, owner=owner):
        try:
            out.append((seg["lease_id"], seg["run_id"], parse_iso(seg["start_at"]), parse_iso(last["end_at"]),
                        int(last["rate_micro"])))
        except (TypeError, ValueError, KeyError):
            continue   # a damaged row: `fleet ledger verify` reports it; a budget check must not crash
    return out


def open_segment_rows(db, lease_ids: list[str], *, kept: bool = False, project: str | None = None,
                      owner: str | None = None) -> list[tuple[dict, dict | None]]:
    """(open row, last row or None) of each open segment of those leases, as stored (the report
    reads more of them, fleet/report/accruing.py): the `open` and `close` rows by lease (an index),
    then the open ones' last rows (an index): never every tick row of a long run, as budget checks
    run on every tick of a meter."""
    out = []
    for first in range(0, len(lease_ids), 500):   # SQLite caps bound parameters
        chunk = lease_ids[first:first + 500]
        marks = ",".join("?" * len(chunk))
        # By lease and kind only (the index): a project filter in SQL sends the planner down the
        # project index, through every row of the month.
        opened = [r for r in db.execute(
            "SELECT segment_id, lease_id, run_id, project, owner, template, shadow, gpus, start_at FROM ledger"
            f" WHERE lease_id IN ({marks}) AND kind = 'open'", chunk)
            if r["segment_id"].endswith(KEPT_SUFFIX) == kept and project in (None, r["project"])
            and owner in (None, r["owner"])]
        if not opened:
            continue
        closed = {r["segment_id"] for r in db.execute(
            f"SELECT segment_id FROM ledger WHERE lease_id IN ({marks}) AND kind = 'close'", chunk)}
        still = {r["segment_id"]: r for r in opened if r["segment_id"] not in closed}
        lasts = last_rows(db, sorted(still))
        out += [(seg, lasts.get(segment_id)) for segment_id, seg in still.items()]
    return out


def last_rows(db, segment_ids: list[str]) -> dict[str, dict]:
    """Each segment's last row, one query per 200 (the unique (segment, seq) index serves each): a
    round trip per segment, on every tick of every meter, was a load on a team's database."""
    out: dict[str, dict] = {}
    for first in range(0, len(segment_ids), 200):
        chunk = segment_ids[first:first + 200]
        # One LIMIT 1 lookup per segment, down the index; an IN list with a MAX(seq) subquery had the
        # planner visit every row of each segment instead (100 ms at 200,000 rows).
        sql = " UNION ALL ".join(f"SELECT * FROM (SELECT segment_id, end_at, rate_micro FROM ledger"
                                 f" WHERE segment_id = ? ORDER BY seq DESC LIMIT 1) AS last{i}"
                                 for i in range(len(chunk)))
        for r in db.execute(sql, chunk):
            out[r["segment_id"]] = r
    return out


def accrued(start: datetime, last: datetime, end: datetime, rate: int) -> int:
    """What a segment costs from its last row to `end`, rounded as its rows are (from its start)."""
    if end <= last:
        return 0
    return cost_micro(rate, (end - start).total_seconds()) - cost_micro(rate, (last - start).total_seconds())


def stranded_micro(ledger: Ledger, *, project: str | None = None, owner: str | None = None,
                   since: datetime | None = None) -> int:
    """What dead controllers' open segments cost from their last row up to min(now, their lease's
    deadline); with `since`, only the part after it."""
    now = ledger.clock()
    leases = stranding_leases(ledger, now)
    if not leases:
        return 0   # the usual case: one indexed read of the live leases
    stale_before = now - timedelta(seconds=STALE_S)
    total = 0
    for lease_id, _run, start, last, rate in open_segments_of(ledger.db, sorted(leases), project=project,
                                                                owner=owner):
        deadline, past = leases[lease_id]
        if past or last < stale_before:   # else its controller wrote lately: alive, its reservation holds the rest
            total += accrued(start, max(last, since) if since is not None else last, min(now, deadline), rate)
    return total


def stranding_leases(ledger: Ledger, now: datetime) -> dict[str, tuple[datetime, bool]]:
    """Lease id -> (its deadline, whether its open segments count whatever their rows' age) for the
    leases whose open run segments may be stranded (stranded_micro; the report, report/accruing.py)."""
    slack = timedelta(seconds=DEADLINE_SLACK_S)
    leases: dict[str, tuple[datetime, bool]] = {}
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
    return leases


def stranded_by_run(db, held: list[tuple[str, str]], now: datetime) -> dict[tuple[str, str], int]:
    """For each (lease, run) of a live reservation on an active lease: what stranded_micro counts of
    that run's open segments (its attempts `<run>-aN` included). The reservation is netted by it, as
    by the run's ledger rows: spend and reservation together never fall below what it reserved, and
    a live run whose rows only look silent (a checker's clock ahead of its own) loses nothing."""
    from ..ids import split_attempt
    wanted = set(held)
    deadlines: dict[str, tuple[datetime, bool]] = {}
    lease_ids = sorted({lease_id for lease_id, _ in held})
    for first in range(0, len(lease_ids), 500):
        chunk = lease_ids[first:first + 500]
        for row in db.execute(f"SELECT id, deadline FROM leases WHERE id IN ({','.join('?' * len(chunk))})"
                              " AND status = 'active'", chunk):
            try:
                deadline = parse_iso(row["deadline"])
            except (TypeError, ValueError):
                continue
            deadlines[row["id"]] = (deadline, now >= deadline + timedelta(seconds=DEADLINE_SLACK_S))
    stale_before = now - timedelta(seconds=STALE_S)
    out: dict[tuple[str, str], int] = {}
    for lease_id, run_id, start, last, rate in open_segments_of(db, sorted(deadlines)):
        deadline, past = deadlines[lease_id]
        for pair in ((lease_id, str(run_id)), (lease_id, split_attempt(str(run_id))[0])):
            if pair in wanted and (past or last < stale_before):
                out[pair] = out.get(pair, 0) + accrued(start, last, min(now, deadline), rate)
                break
    return out


def _leasing_controller_gone(db, lease_id: str) -> bool:
    return any(controller_gone(r["meta"]) for r in db.execute("SELECT meta FROM runs WHERE lease_id = ?", (lease_id,)))
