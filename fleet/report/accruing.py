"""Open segments in a report: what they have cost so far, counted as `fleet budget` counts it.

Two kinds of open segment have no rows for their recent time: a kept segment gets no ticks
(fleet/money/kept.py), and a run whose controller died writes none (fleet/money/stranded.py). Until
they close, `fleet report` showed that time as free (a kept lease's idle hours, a dead controller's
machines still running) while `fleet budget` charged it. Each adds a group per UTC day from its last
row to min(now, its lease's deadline), clipped to the report's period; nothing is written to the
ledger (the segment's close row will carry the same time).
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from ..money.ledger import Ledger, parse_iso


def open_groups(ledger: Ledger, since: datetime | None, until: datetime | None) -> list[dict]:
    """Report groups (rollup's shape) for open kept segments and dead controllers' run segments."""
    from ..money.kept import live_deadlines
    from ..money.reservations import STALE_S
    from ..money.stranded import stranding_leases
    now = ledger.clock()
    kept = {lease_id: (deadline, True) for lease_id, deadline in live_deadlines(ledger).items()}
    stranded = stranding_leases(ledger, now)
    stale_before = now - timedelta(seconds=STALE_S)
    groups = _groups(ledger, kept, True, since, until, now, stale_before)
    return groups + _groups(ledger, stranded, False, since, until, now, stale_before)


def _groups(ledger: Ledger, leases: dict[str, tuple[datetime, bool]], kept: bool, since, until, now,
            stale_before) -> list[dict]:
    from ..money.stranded import accrued, open_segment_rows
    groups: list[dict] = []
    for seg, last in open_segment_rows(ledger.db, sorted(leases), kept=kept):
        try:
            start, lo = parse_iso(seg["start_at"]), parse_iso(last["end_at"])
            rate, gpus = int(last["rate_micro"]), int(seg["gpus"])
        except (TypeError, ValueError, KeyError):
            continue       # a damaged row: the report lists damage from `verify`, never crashes here
        deadline, counted = leases[seg["lease_id"]]
        if not (counted or lo < stale_before):
            continue       # its controller wrote lately: alive, its rows will say
        hi = min(now, deadline)
        lo, hi = max(lo, since) if since else lo, min(hi, until) if until else hi
        run_key = seg["run_id"] or f"(lease {seg['lease_id']}, {'kept, idle' if kept else 'no run'})"
        for day_lo, day_hi in _days(lo, hi):
            cost = accrued(start, day_lo, day_hi, rate)     # rounded as the segment's rows are
            ms = int((day_hi - day_lo).total_seconds() * 1000)
            groups.append({"day": day_lo.strftime("%Y-%m-%d"), "project": seg["project"], "owner": seg["owner"],
                           "template": seg["template"], "shadow": int(seg["shadow"]), "run_key": run_key,
                           "entries": 0, "cost_micro": cost, "machine_ms": ms, "gpu_ms": ms * gpus,
                           "util_gpu_ms": 0, "util_weighted_ms": 0.0, "idle_gpu_ms": 0, "idle_cost_micro": 0.0})
    return groups


def _days(lo: datetime, hi: datetime):
    """[lo, hi) cut at UTC midnights."""
    lo, hi = lo.astimezone(timezone.utc), hi.astimezone(timezone.utc)
    while lo < hi:
        midnight = datetime(lo.year, lo.month, lo.day, tzinfo=timezone.utc) + timedelta(days=1)
        yield lo, min(hi, midnight)
        lo = midnight
