"""The cost ledger: append-only cost entries per machine segment, in the state database.

A segment is one machine billed at one rate. It is written as a run of rows and never rewritten:
`open` (zero length, the moment the machine is leased), one `tick` per controller tick covering
[start_at, end_at), and `close` at release. A controller crash loses at most the tick in progress;
whoever releases the machines later (`fleet down`, the reaper) appends the missing `close` row with
`close_orphans`. Each row carries a digest of its other columns: a damaged row is reported and left out.

Cost of each row = cost(segment start → end) − cost(segment start → previous end), so the sum of a
segment's rows equals its exact cost with no rounding drift, however many ticks it has.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

from .budget import Price, cost_micro, utc_clock

COLUMNS = ("segment_id", "seq", "kind", "start_at", "end_at", "duration_ms", "rate_micro", "cost_micro", "price_source",
           "shadow", "gpus", "gpu_util_permille", "idle_gpu_s", "project", "owner", "run_id", "template",
           "provider", "lease_id", "machine_id", "recorded_at")
_INSERT = (f"INSERT INTO ledger ({', '.join(COLUMNS)}, digest) "
           f"VALUES ({', '.join('?' * (len(COLUMNS) + 1))})")
_SEP = "\x1f"
KEPT_SUFFIX = "#kept"       # segment_id of a kept lease's idle time (run_id NULL)
# The digest's input built by the database itself (portable SQL), so verifying 100,000 rows is one
# query plus a hash per row. CAST(... AS TEXT) of an integer matches Python's str(); NULL → ''.
_CANON_SQL = f" || '{_SEP}' || ".join(f"COALESCE(CAST({c} AS TEXT), '')" for c in COLUMNS)
# No writer goes past these ($100M a row, 3 years, 10,000 GPUs): a row beyond them (a digest is no key)
# would overflow the report's BIGINT sums; it is set aside as impossible.
MAX_COST_MICRO, MAX_DURATION_MS, MAX_GPUS = 10 ** 14, 10 ** 11, 10_000
_ODD_SQL = "end_at < start_at OR " + " OR ".join(f"{c} < 0 OR {c} > {top}" for c, top in zip(
    ("cost_micro", "rate_micro", "duration_ms", "gpus", "idle_gpu_s"),
    (MAX_COST_MICRO, MAX_COST_MICRO, MAX_DURATION_MS, MAX_GPUS, MAX_DURATION_MS)))


def iso(dt: datetime) -> str:
    """Fixed-width UTC text, so string order is time order (range queries use the index)."""
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    dt = datetime.fromisoformat(text)
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def row_digest(values: Iterable[Any]) -> str:
    return _hash(_SEP.join("" if v is None else str(v) for v in values))


def _hash(canon: str) -> str:
    return hashlib.blake2b(canon.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True)
class LedgerEntry:
    id: int
    segment_id: str
    seq: int
    kind: str                  # open | tick | close
    start_at: str              # ISO UTC (fixed width); parse with parse_iso when a datetime is needed
    end_at: str
    duration_ms: int
    rate_micro: int
    cost_micro: int
    price_source: str
    shadow: bool               # a local machine's "would cost", not billed money
    gpus: int
    gpu_util_permille: int | None
    idle_gpu_s: int | None
    project: str
    owner: str
    run_id: str | None
    template: str
    provider: str
    lease_id: str
    machine_id: str
    recorded_at: str

    @property
    def seconds(self) -> float:
        return self.duration_ms / 1000


@dataclass(frozen=True)
class CorruptRow:
    id: Any
    reason: str

    def __str__(self) -> str:
        return f"ledger row {self.id}: {self.reason}"


@dataclass
class LedgerRead:
    entries: list[LedgerEntry] = field(default_factory=list)
    corrupt: list[CorruptRow] = field(default_factory=list)


@dataclass
class TickTelemetry:
    """What one machine's GPUs did during a tick (from telemetry streamed home)."""

    gpu_util_permille: int | None = None
    idle_gpu_s: int | None = None


@dataclass
class OpenSegment:
    segment_id: str
    start: datetime
    price: Price
    fixed: dict[str, Any]          # project, owner, run_id, template, provider, lease_id, machine_id, gpus
    seq: int = 0
    last_end: datetime | None = None
    closed: bool = False

    def cost_between(self, start: datetime, end: datetime) -> int:
        whole = cost_micro(self.price.per_hour_micro, (end - self.start).total_seconds())
        before = cost_micro(self.price.per_hour_micro, (start - self.start).total_seconds())
        return whole - before


def utc_days(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """[start, end) cut at each UTC midnight between: a row's time then lies in one day, so in one
    month. One row for a kept lease's two idle days had put all of it in the month it began, and a
    June budget got back, at the segment's close, what it had counted while the segment was open."""
    from datetime import timedelta
    pieces, a = [], start
    while True:
        day = a.astimezone(timezone.utc)
        midnight = datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(days=1)
        if end <= midnight:
            return pieces + [(a, end)]
        pieces.append((a, midnight))
        a = midnight


def _check(row: dict[str, Any]) -> LedgerEntry | CorruptRow:
    rid = row.get("id")
    try:
        if row_digest(row.get(c) for c in COLUMNS) != row.get("digest"):
            return CorruptRow(rid, "contents do not match its digest (edited or damaged)")
        util, idle = row["gpu_util_permille"], row["idle_gpu_s"]
        entry = LedgerEntry(
            id=rid, segment_id=str(row["segment_id"]), seq=int(row["seq"]), kind=str(row["kind"]),
            start_at=str(row["start_at"]), end_at=str(row["end_at"]), duration_ms=int(row["duration_ms"]),
            rate_micro=int(row["rate_micro"]), cost_micro=int(row["cost_micro"]), price_source=str(row["price_source"]),
            shadow=bool(int(row["shadow"])), gpus=int(row["gpus"]),
            gpu_util_permille=None if util is None else int(util), idle_gpu_s=None if idle is None else int(idle),
            project=str(row["project"]), owner=str(row["owner"]), run_id=row["run_id"],
            template=str(row["template"]), provider=str(row["provider"]), lease_id=str(row["lease_id"]),
            machine_id=str(row["machine_id"]), recorded_at=str(row["recorded_at"]))
        if entry.end_at < entry.start_at:
            return CorruptRow(rid, "ends before it starts")
        if entry.cost_micro < 0 or entry.rate_micro < 0:
            return CorruptRow(rid, "negative cost or rate")
        return entry
    except (TypeError, ValueError, KeyError) as exc:
        return CorruptRow(rid, f"unreadable: {exc}")


class Ledger:
    def __init__(self, db, clock=utc_clock):
        self.db = db
        self.clock = clock

    # -- writing (append only) -------------------------------------------------------------------
    def _row(self, seg: OpenSegment, seq: int, kind: str, start: datetime, end: datetime, cost: int,
             tel: TickTelemetry | None) -> tuple:
        tel = tel or TickTelemetry()
        f = seg.fixed
        duration_ms = round((end - start).total_seconds() * 1000)
        values = (seg.segment_id, seq, kind, iso(start), iso(end), duration_ms, seg.price.per_hour_micro, cost,
                  seg.price.source, int(seg.price.shadow), f["gpus"], tel.gpu_util_permille, tel.idle_gpu_s,
                  f["project"], f["owner"], f["run_id"], f["template"], f["provider"], f["lease_id"],
                  f["machine_id"], iso(self.clock()))
        return values + (row_digest(values),)

    def open_segment(self, *, lease, machine, price: Price, run_id: str | None = None,
                     at: datetime | None = None, kept: bool = False) -> OpenSegment:
        """`kept`: the lease's idle time between runs (no run; fleet/money/kept.py)."""
        start = at or self.clock()
        fixed = {"project": lease.project, "owner": lease.user, "run_id": run_id, "template": lease.template,
                 "provider": lease.provider, "lease_id": lease.id, "machine_id": machine.id,
                 "gpus": len(machine.gpu_slots)}
        seg = OpenSegment(f"{machine.id}@{iso(start)}{KEPT_SUFFIX if kept else ''}", start, price, fixed,
                          last_end=start)
        with self.db.transaction():
            self.db.execute(_INSERT, self._row(seg, 0, "open", start, start, 0, None))
        return seg

    def append(self, segments: list[OpenSegment], at: datetime | None = None, *, kind: str = "tick",
               telemetry: dict[str, TickTelemetry] | None = None) -> int:
        """One row per open segment covering [its last end, at), in one transaction. Returns the cost added.

        Another process may have written to the same segments meanwhile (`fleet down` from another
        shell closes a running run's segments): (segment, seq) is unique, so the losing write fails
        whole; the segments are then re-read and the write retried from where the other left off
        (nothing, for a segment it closed). Every second is billed once, by whoever wrote first."""
        from ..state.db import ConstraintViolation
        at = at or self.clock()
        for attempt in range(3):
            rows, added, written = [], 0, {}
            for seg in segments:
                if seg.closed:
                    continue
                start = seg.last_end or seg.start
                pieces = utc_days(start, max(at, start))
                tel = (telemetry or {}).get(seg.fixed["machine_id"])
                for i, (a, b) in enumerate(pieces):
                    last = i == len(pieces) - 1
                    cost = seg.cost_between(a, b)
                    rows.append(self._row(seg, seg.seq + 1 + i, kind if last else "tick", a, b, cost,
                                          tel if last else None))
                    added += cost
                written[id(seg)] = len(pieces)
            if not rows:
                return 0
            try:
                with self.db.transaction():
                    self.db.executemany(_INSERT, rows)
            except ConstraintViolation:
                if attempt == 2:
                    raise
                self._catch_up(segments)
                continue
            break
        # Advance only after the rows are durable: a failed write is retried whole at the next tick.
        for seg in segments:
            if not seg.closed:
                seg.seq += written[id(seg)]
                seg.last_end = max(at, seg.last_end or seg.start)
                seg.closed = kind == "close"
        return added

    def _catch_up(self, segments: list[OpenSegment]) -> None:
        """Bring in-memory segments up to what the ledger holds (rows another writer appended)."""
        for lease_id in {seg.fixed["lease_id"] for seg in segments}:
            last: dict[str, LedgerEntry] = {}
            for e in self.read(lease_id=lease_id).entries:
                if e.segment_id not in last or e.seq > last[e.segment_id].seq:
                    last[e.segment_id] = e
            for seg in segments:
                e = last.get(seg.segment_id)
                if seg.fixed["lease_id"] == lease_id and e is not None and e.seq > seg.seq:
                    seg.seq, seg.last_end = e.seq, parse_iso(e.end_at)
                    seg.closed = seg.closed or e.kind == "close"

    def close(self, segments: list[OpenSegment], at: datetime | None = None,
              telemetry: dict[str, TickTelemetry] | None = None) -> int:
        return self.append(segments, at, kind="close", telemetry=telemetry)

    def close_orphans(self, lease_id: str, at: datetime | None = None) -> int:
        """Close the segments of a lease whose controller died: bill from their last row to `at`
        (when the machines were released). Returns the cost added."""
        orphans = self.open_segments(lease_id)
        return self.close(orphans, at or self.clock()) if orphans else 0

    def open_segments(self, lease_id: str, *, kept_only: bool = False) -> list[OpenSegment]:
        """The lease's segments with no `close` row yet, rebuilt from their rows (to append to)."""
        read = self.read(lease_id=lease_id)
        first: dict[str, LedgerEntry] = {}
        last: dict[str, LedgerEntry] = {}
        for e in read.entries:
            if e.segment_id not in last or e.seq > last[e.segment_id].seq:
                last[e.segment_id] = e
            if e.segment_id not in first or e.seq < first[e.segment_id].seq:
                first[e.segment_id] = e
        # A damaged row is left out of `read`: its seq and kind still count (the next row goes after
        # it, and a damaged close still closes), or every append to the segment would collide.
        stored = {r["segment_id"]: (int(r["top"]), bool(r["closed"])) for r in self.db.execute(
            "SELECT segment_id, MAX(seq) AS top, MAX(CASE WHEN kind = 'close' THEN 1 ELSE 0 END) AS closed"
            " FROM ledger WHERE lease_id = ? GROUP BY segment_id", (lease_id,))}
        out = []
        for e in last.values():
            top, closed = stored.get(e.segment_id, (e.seq, False))
            if e.kind == "close" or closed or kept_only and not e.segment_id.endswith(KEPT_SUFFIX):
                continue
            out.append(OpenSegment(e.segment_id, parse_iso(first[e.segment_id].start_at),
                                   Price(e.rate_micro, e.price_source, e.shadow),
                                   {k: getattr(e, k) for k in ("project", "owner", "run_id", "template", "provider",
                                                               "lease_id", "machine_id", "gpus")},
                                   seq=max(e.seq, top), last_end=parse_iso(e.end_at)))
        return out

    # -- reading ---------------------------------------------------------------------------------
    @staticmethod
    def _where(*, since=None, until=None, after_id=None, through_id=None, **equal) -> tuple[str, list]:
        where, params = [], []
        if after_id is not None:
            where.append("id > ?")
            params.append(after_id)
        if through_id is not None:
            where.append("id <= ?")
            params.append(through_id)
        for column, value in equal.items():
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            where.append("start_at >= ?")
            params.append(iso(since))
        if until is not None:
            where.append("start_at < ?")
            params.append(iso(until))
        return (" WHERE " + " AND ".join(where) if where else ""), params

    def read(self, *, since: datetime | None = None, until: datetime | None = None, project: str | None = None,
             owner: str | None = None, run_id: str | None = None, lease_id: str | None = None) -> LedgerRead:
        """Entries starting in [since, until), oldest first; damaged rows come back in `corrupt`."""
        where, params = self._where(since=since, until=until, project=project, owner=owner, run_id=run_id,
                                    lease_id=lease_id)
        out = LedgerRead()
        for row in self.db.execute(f"SELECT * FROM ledger{where} ORDER BY id", params):
            checked = _check(row)
            (out.corrupt if isinstance(checked, CorruptRow) else out.entries).append(checked)
        return out

    def verify(self, *, since: datetime | None = None, until: datetime | None = None,
               after_id: int | None = None, through_id: int | None = None) -> list[CorruptRow]:
        """Damaged rows in the period: digest mismatch, or values no writer produces. The database
        builds each digest's input, so this is one query and one hash per row."""
        where, params = self._where(since=since, until=until, after_id=after_id, through_id=through_id)
        bad = []
        rows = self.db.execute(
            f"SELECT id, digest, {_CANON_SQL} AS canon, CASE WHEN {_ODD_SQL} THEN 1 ELSE 0 END AS odd"
            f" FROM ledger{where} ORDER BY id", params)
        for row in rows:
            if row["canon"] is None or _hash(row["canon"]) != row["digest"]:
                bad.append(CorruptRow(row["id"], "contents do not match its digest (edited or damaged)"))
            elif row["odd"]:
                bad.append(CorruptRow(row["id"], "impossible values (cost, duration or GPUs out of range)"))
        return bad

    def aggregate(self, *, since: datetime | None = None, until: datetime | None = None,
                  after_id: int | None = None, through_id: int | None = None, exclude_ids: list | None = None,
                  exclude_damaged: bool = False) -> list[dict[str, Any]]:
        """Sums per (day, project, owner, template, run, billed/shadow), computed by the database: the
        report's raw material, small however many rows the ledger has."""
        where, params = self._where(since=since, until=until, after_id=after_id, through_id=through_id)
        if exclude_damaged:
            where += (" AND " if where else " WHERE ") + "id NOT IN (SELECT id FROM ledger_damaged)"
        if exclude_ids:
            marks = ",".join("?" * len(exclude_ids))
            where += (" AND " if where else " WHERE ") + f"id NOT IN ({marks})"
            params += list(exclude_ids)
        gpu_ms = "(gpus * duration_ms)"
        idle_ms = f"(CASE WHEN idle_gpu_s * 1000 > {gpu_ms} THEN {gpu_ms} ELSE idle_gpu_s * 1000 END)"
        sql = f"""
            SELECT SUBSTR(start_at, 1, 10) AS day, project, owner, template, shadow,
                   CASE WHEN run_id IS NOT NULL THEN run_id
                        WHEN segment_id LIKE '%{KEPT_SUFFIX}' THEN '(lease ' || lease_id || ', kept, idle)'
                        ELSE '(lease ' || lease_id || ', no run)' END AS run_key,
                   COUNT(*) AS entries, SUM(cost_micro) AS cost_micro, SUM(duration_ms) AS machine_ms,
                   SUM({gpu_ms}) AS gpu_ms,
                   SUM(CASE WHEN gpu_util_permille IS NULL THEN 0 ELSE {gpu_ms} END) AS util_gpu_ms,
                   SUM(CASE WHEN gpu_util_permille IS NULL THEN 0 ELSE gpu_util_permille * 1.0 * {gpu_ms} END)
                       AS util_weighted_ms,
                   SUM(CASE WHEN idle_gpu_s IS NULL OR {gpu_ms} <= 0 THEN 0 ELSE {idle_ms} END) AS idle_gpu_ms,
                   SUM(CASE WHEN idle_gpu_s IS NULL OR {gpu_ms} <= 0 THEN 0
                            ELSE cost_micro * 1.0 * {idle_ms} / {gpu_ms} END) AS idle_cost_micro
            FROM ledger{where}
            GROUP BY SUBSTR(start_at, 1, 10), project, owner, template, shadow,
                     CASE WHEN run_id IS NOT NULL THEN run_id
                        WHEN segment_id LIKE '%{KEPT_SUFFIX}' THEN '(lease ' || lease_id || ', kept, idle)'
                        ELSE '(lease ' || lease_id || ', no run)' END"""
        return self.db.execute(sql, params)

    def spent_micro(self, *, project: str | None = None, owner: str | None = None,
                    since: datetime | None = None, exclude_run: str | None = None,
                    exclude_lease: str | None = None, lease_kept_since: datetime | None = None) -> int:
        """Fast total for budget scopes (SQL SUM; digests are checked by `read`/`verify`, not here).

        `exclude_lease` alone: a lease made for this run, so all its rows are this run's (kept time
        aside). With `lease_kept_since` (the lease existed before this run, whose time on it starts
        there) only its run-less rows from then on are; other runs' rows on it count like any other."""
        where, params = self._where(since=since, project=project, owner=owner)
        extra = []
        if exclude_run is not None:
            extra.append("(run_id IS NULL OR run_id <> ?)")
            params.append(exclude_run)
        if exclude_lease is not None:   # its kept time is past spend, not this run's: it counts
            extra.append(f"(lease_id <> ? OR segment_id LIKE '%{KEPT_SUFFIX}'"
                         + (" OR run_id IS NOT NULL OR start_at < ?)" if lease_kept_since is not None else ")"))
            params.append(exclude_lease)
            if lease_kept_since is not None:
                params.append(iso(lease_kept_since))
        if extra:
            where += (" AND " if where else " WHERE ") + " AND ".join(extra)
        cost = "cost_micro + 0"   # SQLite's text reads 0; an impossible cost neither gives money back nor overflows
        rows = self.db.execute(f"SELECT COALESCE(SUM(CASE WHEN {cost} <= 0 THEN 0 WHEN {cost} > {MAX_COST_MICRO}"
                               f" THEN {MAX_COST_MICRO} ELSE {cost} END), 0) AS total FROM ledger{where}", params)
        # Open segments no controller ticks: kept idle time up to now, a dead controller's machines to their deadline.
        from .kept import accruing_micro
        from .stranded import stranded_micro
        return (int(rows[0]["total"] or 0) + accruing_micro(self, project=project, owner=owner, since=since)
                + stranded_micro(self, project=project, owner=owner, since=since))
