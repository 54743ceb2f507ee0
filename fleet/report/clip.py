"""Ledger rows that straddle a report's --since or --until count only the part inside the period.

Rows never span a UTC midnight, but one row may cover most of a day: a kept segment or an orphan's
close is one row per UTC day. Selected by start time alone, such a row counted wholly or not at all
in a period that begins or ends inside it (a 6-hour window inside a kept lease's idle day cost $0; a
window ending at noon got the whole day), and `fleet down` changed the report of a past period,
since an open segment is clipped exactly (report/accruing.py). Here a straddling row's cost,
machine time, GPU time and idle time are pro-rated by the share of its time inside the period.

A row that straddles `since` starts on the same UTC day, so it is found among that day's rows; one
that straddles `until` starts inside the period and is already in the period's sums, which lose
the part after `until`.
"""
from __future__ import annotations

from datetime import datetime, timezone

from ..money.ledger import KEPT_SUFFIX, CorruptRow, Ledger, LedgerEntry, _check, iso, parse_iso

SUMS = ("entries", "cost_micro", "machine_ms", "gpu_ms", "util_gpu_ms", "util_weighted_ms", "idle_gpu_ms",
        "idle_cost_micro")
KEYS = ("day", "project", "owner", "template", "shadow", "run_key")


def _midnight(dt: datetime) -> datetime:
    dt = dt.astimezone(timezone.utc)
    return datetime(dt.year, dt.month, dt.day, tzinfo=timezone.utc)


def share(entry: LedgerEntry, since: datetime | None, until: datetime | None) -> float:
    """The fraction of the row's time inside [since, until) (a zero-length row inside counts whole)."""
    a, b = parse_iso(entry.start_at), parse_iso(entry.end_at)
    if b <= a:
        return 1.0
    lo, hi = max(a, since) if since else a, min(b, until) if until else b
    return max(0.0, (hi - lo).total_seconds()) / (b - a).total_seconds()


def run_key(entry: LedgerEntry) -> str:
    if entry.run_id:
        return entry.run_id
    return f"(lease {entry.lease_id}, {'kept, idle' if entry.segment_id.endswith(KEPT_SUFFIX) else 'no run'})"


def straddlers(ledger: Ledger, since: datetime | None, until: datetime | None, *, after_id: int | None = None,
               through_id: int | None = None, exclude_damaged: bool = False, exclude_ids=(),
               ) -> tuple[list[LedgerEntry], list[LedgerEntry], list[CorruptRow]]:
    """(rows begun before `since` that end after it, rows begun in the period that end after `until`,
    damaged rows among them), each row checked against its digest."""
    found: list[list] = [[], []]
    bad: list[CorruptRow] = []
    edges = []
    if since is not None:
        edges.append((0, _midnight(since), since, since))
    if until is not None:
        lo = _midnight(until) if since is None else max(since, _midnight(until))
        edges.append((1, lo, until, until))
    for which, lo, hi, boundary in edges:
        where, params = Ledger._where(since=lo, until=hi, after_id=after_id, through_id=through_id)
        where += " AND end_at > ?"
        params.append(iso(boundary))
        if exclude_damaged:
            where += " AND id NOT IN (SELECT id FROM ledger_damaged)"
        if exclude_ids:
            where += f" AND id NOT IN ({','.join('?' * len(exclude_ids))})"
            params += list(exclude_ids)
        for row in ledger.db.execute(f"SELECT * FROM ledger{where} ORDER BY id", params):
            checked = _check(row)
            (bad if isinstance(checked, CorruptRow) else found[which]).append(checked)
    return found[0], found[1], bad


def _sums(e: LedgerEntry, f: float) -> dict:
    """The row's contribution to a group, as Ledger.aggregate sums it, scaled to the share `f`."""
    cost = e.cost_micro if f == 1.0 else round(e.cost_micro * f)
    ms = e.duration_ms * f
    gpu = e.gpus * ms
    idle = 0.0 if e.idle_gpu_s is None or gpu <= 0 else min(e.idle_gpu_s * 1000 * f, gpu)
    return {"entries": 1, "cost_micro": cost, "machine_ms": ms, "gpu_ms": gpu,
            "util_gpu_ms": 0 if e.gpu_util_permille is None else gpu,
            "util_weighted_ms": 0.0 if e.gpu_util_permille is None else e.gpu_util_permille * gpu,
            "idle_gpu_ms": idle, "idle_cost_micro": cost * idle / gpu if idle else 0.0}


def _key(e: LedgerEntry) -> tuple:
    return (e.start_at[:10], e.project, e.owner, e.template, int(e.shadow), run_key(e))


def clip_groups(ledger: Ledger, groups: list[dict], since: datetime | None, until: datetime | None,
                **filters) -> tuple[list[dict], list[CorruptRow]]:
    """Groups of Ledger.aggregate(since, until, **filters) with the straddling rows pro-rated."""
    if since is None and until is None:
        return groups, []
    before, after, bad = straddlers(ledger, since, until, **filters)
    if not before and not after:
        return groups, bad
    merged = {tuple(g[k] if k != "shadow" else int(g[k]) for k in KEYS): dict(g) for g in groups}
    for e in before:
        g = merged.setdefault(_key(e), {**dict(zip(KEYS, _key(e))), **{k: 0 for k in SUMS}})
        for k, v in _sums(e, share(e, since, until)).items():
            g[k] = (g[k] or 0) + v
    for e in after:
        g = merged.get(_key(e))
        if g is None:
            continue        # not among the groups (left out by a filter the caller applied)
        whole, part = _sums(e, 1.0), _sums(e, share(e, since, until))
        for k in SUMS:
            if k != "entries":
                g[k] = max(0, (g[k] or 0) - (whole[k] - part[k]))
    return list(merged.values()), bad


def clipped_entries(ledger: Ledger, since: datetime | None, until: datetime | None,
                    entries: list[LedgerEntry]) -> tuple[list[tuple[LedgerEntry, float]], list[CorruptRow]]:
    """The entries of Ledger.read(since, until) and the rows begun before `since` that end inside
    the period, each with the share of its time inside it (row-by-row reports)."""
    before, bad = [], []
    if since is not None:
        before, _, bad = straddlers(ledger, since, None)
    return [(e, share(e, since, until)) for e in before + entries], bad
