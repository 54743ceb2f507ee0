"""Sealed sums of the ledger, so a report reads a few hundred groups instead of every row.

`seal` verifies rows once (their digest) and adds them to `ledger_rollup` per (day, project,
owner, template, billed/shadow, run); `ledger_rollup_mark` holds the last row id sealed, and
damaged rows go to `ledger_damaged` (reported by every later report). Rows younger than
SEAL_LAG_S stay unsealed, and so does any id after the last row a seal sees older than the lag
below the first young one: on PostgreSQL ids can commit slightly out of order, and a lag that long
means no row is skipped. A row dated further ahead than the lag (a clock far off, or a teammate's
year 9999 in the shared state) is no time at all: it neither stops a seal nor vouches for the ids
below it, and is sealed with the rows around it. `gather` then combines sealed whole days, the
sealed rows of partial edge days (a --since/--until inside a day), and the unsealed rows, verified
as they are read; a row straddling --since or --until counts its share inside the period
(report/clip.py).

Once sealed, a later edit to a ledger row does not change reports of whole days; `fleet report
--verify` re-checks every row's digest to find such damage. The sealed rows of a partial edge day
are read raw, so they are verified as read: an edited one is left out and listed as damaged.
"""
from __future__ import annotations

import math
import re
from datetime import date, datetime, timedelta, timezone

from ..money.budget import utc_clock
from ..errors import EnvironmentProblem
from ..money.ledger import CorruptRow, Ledger, iso

SEAL_LAG_S = 300
SUMS = ("entries", "cost_micro", "machine_ms", "gpu_ms", "util_gpu_ms", "util_weighted_ms", "idle_gpu_ms",
        "idle_cost_micro")
KEYS = ("day", "project", "owner", "template", "shadow", "run_key")
_UPSERT = (f"INSERT INTO ledger_rollup ({', '.join(KEYS + SUMS)}) VALUES ({', '.join('?' * (len(KEYS) + len(SUMS)))})"
           f" ON CONFLICT ({', '.join(KEYS)}) DO UPDATE SET "
           + ", ".join(f"{c} = ledger_rollup.{c} + excluded.{c}" for c in SUMS))
_INTS = {"entries", "cost_micro", "machine_ms", "gpu_ms", "util_gpu_ms", "idle_gpu_ms"}


def mark(db) -> int:
    rows = db.execute("SELECT through_id FROM ledger_rollup_mark WHERE id = 1")
    return int(rows[0]["through_id"]) if rows else 0


def _values(g: dict) -> tuple:
    sums = tuple(int(g[c] or 0) if c in _INTS else float(g[c] or 0) for c in SUMS)
    return (g["day"], g["project"], g["owner"], g["template"], int(g["shadow"]), g["run_key"]) + sums


def seal(ledger: Ledger, now: datetime | None = None, lag_s: float = SEAL_LAG_S) -> int:
    """Seal every row older than the lag. Returns how many rows were sealed."""
    db = ledger.db
    now = now or utc_clock()
    cutoff, ahead = iso(now - timedelta(seconds=lag_s)), iso(now + timedelta(seconds=lag_s))
    with db.transaction():
        # Before the first seal there is no mark row for FOR UPDATE to lock: two first seals at once
        # (a team's fresh PostgreSQL) both went on, and the second failed on the mark's key.
        db.serialise("ledger rollup seal")
        rows = db.lock_rows("SELECT through_id FROM ledger_rollup_mark WHERE id = 1")
        done = int(rows[0]["through_id"]) if rows else 0
        # A row dated further ahead than the lag is not young: one dated 9999 would stop every seal for good.
        young = db.execute("SELECT MIN(id) AS young FROM ledger WHERE id > ? AND recorded_at >= ?"
                           " AND recorded_at < ?", (done, cutoff, ahead))[0]["young"]
        # Through the last row seen older than the lag (below the first young one), never young - 1 nor
        # a row dated ahead: a later id may be a row inserted but not yet committed (PostgreSQL gives
        # ids at INSERT), which the mark would pass unseen and no report would read again. Rows below a
        # row older than the lag were inserted before it, so they are committed (or rolled back) by now.
        below = "" if young is None else f" AND id < {int(young)}"
        top = db.execute("SELECT MAX(id) AS top FROM ledger WHERE id > ? AND recorded_at < ?" + below,
                         (done, cutoff))[0]["top"]
        upto = done if top is None else int(top)
        if upto <= done:
            return 0
        damaged = ledger.verify(after_id=done, through_id=upto)
        for bad in damaged:
            start = db.execute("SELECT start_at FROM ledger WHERE id = ?", (bad.id,))
            text = start[0]["start_at"] if start else None
            db.execute("INSERT INTO ledger_damaged (id, start_at, reason) VALUES (?, ?, ?)",
                       (bad.id, text if isinstance(text, str) else None, bad.reason))
        groups = ledger.aggregate(after_id=done, through_id=upto, exclude_damaged=True)
        if groups:
            db.executemany(_UPSERT, [_values(g) for g in groups])
        if rows:
            db.execute("UPDATE ledger_rollup_mark SET through_id = ? WHERE id = 1", (upto,))
        else:
            db.execute("INSERT INTO ledger_rollup_mark (id, through_id) VALUES (1, ?)", (upto,))
    return upto - done


def _midnight(dt: datetime) -> datetime:
    dt = dt.astimezone(timezone.utc)
    return datetime(dt.year, dt.month, dt.day, tzinfo=timezone.utc)


def _split(since: datetime | None, until: datetime | None):
    """Whole days [first_day, end_day) served from the rollup, and raw time ranges for partial days."""
    first_day = end_day = None
    edges = []
    if since is not None:
        start = _midnight(since)
        if start != since:
            start += timedelta(days=1)
            edges.append((since, start if until is None else min(start, until)))
        first_day = start
    if until is not None:
        end = _midnight(until)
        if end != until and (since is None or end >= since):
            edges.append((end if since is None else max(end, since), until))
        end_day = end
    if first_day is not None and end_day is not None and end_day <= first_day:
        return None, None, edges, True           # no whole day in the period
    return first_day, end_day, edges, False


def _sealed(db, days: tuple[datetime | None, datetime | None] | None) -> tuple[int, list[dict]]:
    """The sealed mark and the rollup's groups of whole days [first, end) (None: no whole day), read
    in one statement: a seal committed by another process between two reads had its rows counted
    twice, once in the rollup and once more as rows after the mark read before it."""
    if days is None:
        rows = db.execute("SELECT through_id FROM ledger_rollup_mark WHERE id = 1")
        return (int(rows[0]["through_id"]) if rows else 0), []
    on, params = [], []
    for bound, op in zip(days, (">=", "<")):
        if bound is not None:
            on.append(f"r.day {op} ?")
            params.append(bound.strftime("%Y-%m-%d"))
    rows = db.execute("SELECT m.through_id AS sealed_through, r.* FROM ledger_rollup_mark m LEFT JOIN ledger_rollup r"
                      f" ON {' AND '.join(on) or '1 = 1'} WHERE m.id = 1", params)
    if not rows:
        return 0, []            # never sealed: every row is read below
    groups = [{k: v for k, v in r.items() if k != "sealed_through"} for r in rows if r["day"] is not None]
    return int(rows[0]["sealed_through"]), groups


def gather(ledger: Ledger, since: datetime | None, until: datetime | None, max_excluded: int = 900,
           now: datetime | None = None) -> tuple[list[dict], list[CorruptRow]] | None:
    """Aggregate groups and damaged rows for [since, until); None when too many unsealed rows are
    damaged to leave out by id (the caller then sums row by row). Rows straddling since or until
    count only their share inside the period (report/clip.py)."""
    from .clip import clip_groups
    db = ledger.db
    try:
        seal(ledger, now)
    except EnvironmentProblem:
        pass    # a locked or read-only database: everything not yet sealed is read live below
    first_day, end_day, edges, no_days = _split(since, until)
    done, groups = _sealed(db, None if no_days else (first_day, end_day))
    where, params = Ledger._where(since=since, until=until, through_id=done)   # ledger_damaged keeps start_at too
    sealed_bad = [CorruptRow(r["id"], r["reason"]) for r in db.execute(
        "SELECT id, reason FROM ledger_damaged" + where + " ORDER BY id", params)]
    known = {c.id for c in sealed_bad}
    # The edge days' sealed rows are read raw, so they are verified as read: a row edited after its
    # seal would count there (and nowhere in a whole-day report) with no word of damage.
    edges = [(lo, hi) for lo, hi in edges if hi > lo]
    edge_bad = [c for lo, hi in edges for c in ledger.verify(since=lo, until=hi, through_id=done) if c.id not in known]
    fresh_bad = ledger.verify(since=since, until=until, after_id=done)
    if len(fresh_bad) + len(edge_bad) > max_excluded:
        return None
    clip_bad: list[CorruptRow] = []
    for lo, hi, sealed in [(lo, hi, True) for lo, hi in edges] + [(since, until, False)]:
        filters = ({"through_id": done, "exclude_damaged": True, "exclude_ids": [c.id for c in edge_bad]} if sealed
                   else {"after_id": done, "exclude_ids": [c.id for c in fresh_bad]})
        part, bad = clip_groups(ledger, ledger.aggregate(since=lo, until=hi, **filters), lo, hi, **filters)
        groups += part
        clip_bad += bad
    from .accruing import open_groups
    groups += open_groups(ledger, since, until)      # kept and stranded time so far, as budgets count it
    sane = [g for g in groups if _sane(g)]
    odd = [CorruptRow(f"group {str(g.get('day'))[:10]!r}/{str(g.get('project'))[:40]!r}",
                      "a day that is not one, or a sum that is negative or not finite") for g in groups if not _sane(g)]
    listed = sealed_bad + edge_bad + fresh_bad
    seen = {c.id for c in listed}
    for c in clip_bad:           # damaged rows begun before `since` that reach into the period
        if c.id not in seen:
            seen.add(c.id)
            listed.append(c)
    return sane, listed + odd


_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_SUMS = ("entries", "cost_micro", "machine_ms", "gpu_ms", "util_gpu_ms", "util_weighted_ms", "idle_gpu_ms",
         "idle_cost_micro")


def _sane(group: dict) -> bool:
    """A group a report can add up: a real day, and sums that are finite and not negative. The state is
    shared and the ledger's digest has no key, so a teammate can write any of them (a forged negative
    total, a day that is no date, infinity); such a group is left out and listed as damaged."""
    day = group.get("day")
    if not isinstance(day, str) or not _DAY.fullmatch(day):
        return False
    try:
        date.fromisoformat(day)
    except ValueError:
        return False
    for key in _SUMS:
        value = group.get(key, 0)
        if value is None:
            continue
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            return False
    return True
