"""Building a cost report from the ledger: cost and GPU-hours grouped by project, user, run,
template or day, for managers. Billed money and local machines' "would cost" are kept apart.

The database does the heavy lifting: rows are verified once and sealed into per-day sums
(rollup.py), the few unsealed rows are verified and summed by one GROUP BY, and Python rolls those
groups up into every grouping the renderers need, so a report over 100,000 rows costs little more
than over 1,000.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from ..errors import UsageError
from ..money.ledger import Ledger, parse_iso
from ..telemetry import IDLE_PERCENT
from .budgets import MonthBudgets
from .rollup import gather

GROUPS = ("project", "user", "run", "template", "day")


@dataclass
class Row:
    key: str
    cost_micro: int = 0            # billed money
    would_cost_micro: int = 0      # local machines' shadow price
    machine_s: float = 0.0
    gpu_s: float = 0.0
    util_gpu_s: float = 0.0        # GPU-seconds with a utilisation figure
    util_weighted: float = 0.0     # Σ permille × GPU-seconds
    idle_gpu_s: float = 0.0
    idle_cost_micro: float = 0.0   # billed + would cost of the idle share
    idle_would_cost_micro: float = 0.0   # the simulated part of idle_cost_micro
    runs: set = field(default_factory=set)

    def add_group(self, g: dict) -> None:
        """One aggregate row from Ledger.aggregate (milliseconds → seconds)."""
        if int(g["shadow"]):
            self.would_cost_micro += int(g["cost_micro"] or 0)
        else:
            self.cost_micro += int(g["cost_micro"] or 0)
        self.machine_s += (g["machine_ms"] or 0) / 1000
        self.gpu_s += (g["gpu_ms"] or 0) / 1000
        self.util_gpu_s += (g["util_gpu_ms"] or 0) / 1000
        self.util_weighted += (g["util_weighted_ms"] or 0) / 1000
        self.idle_gpu_s += (g["idle_gpu_ms"] or 0) / 1000
        self.idle_cost_micro += g["idle_cost_micro"] or 0
        if int(g["shadow"]):
            self.idle_would_cost_micro += g["idle_cost_micro"] or 0
        self.runs.add(g["run_key"])

    def add(self, cost: int, shadow: bool, seconds: float, gpus: int, util, idle, run) -> None:
        if shadow:
            self.would_cost_micro += cost
        else:
            self.cost_micro += cost
        gpu_s = gpus * seconds
        self.machine_s += seconds
        self.gpu_s += gpu_s
        if util is not None and gpu_s > 0:
            self.util_gpu_s += gpu_s
            self.util_weighted += util * gpu_s
        if idle is not None and gpu_s > 0:
            idle = min(idle, gpu_s)
            self.idle_gpu_s += idle
            self.idle_cost_micro += cost * idle / gpu_s
            if shadow:
                self.idle_would_cost_micro += cost * idle / gpu_s
        if run:
            self.runs.add(run)

    @property
    def total_micro(self) -> int:
        return self.cost_micro + self.would_cost_micro

    @property
    def idle_billed_micro(self) -> float:
        return self.idle_cost_micro - self.idle_would_cost_micro

    @property
    def gpu_hours(self) -> float:
        return self.gpu_s / 3600

    @property
    def idle_gpu_hours(self) -> float:
        return self.idle_gpu_s / 3600

    @property
    def mean_gpu_util(self) -> float | None:
        """Percent, weighted by GPU-seconds; None when no machine reported GPU figures."""
        return self.util_weighted / self.util_gpu_s / 10 if self.util_gpu_s else None


@dataclass
class RunInfo:
    """Who ran a run and what: project and user from the ledger, the command (stored with secrets
    already masked) from the runs table when this state database has the run."""

    project: str
    user: str
    command: str | None = None


@dataclass
class Report:
    by: str
    since: datetime | None
    until: datetime | None
    rows: list[Row]
    total: Row
    by_project: list[Row]
    top_runs: list[Row]
    days: list[str]                              # every day with entries, in order
    daily_by_project: dict[str, dict[str, int]]  # project → day → total micro-dollars
    daily_billed: dict[str, dict[str, int]]      # project → day → billed micro-dollars
    daily_would: dict[str, dict[str, int]]       # project → day → would-cost micro-dollars
    daily_util: dict[str, float | None]          # day → mean GPU utilisation %
    corrupt: list[str]
    entries: int
    idle_percent: float = IDLE_PERCENT
    run_info: dict[str, RunInfo] = field(default_factory=dict)     # top runs' project, user, command
    idle_payers: list[Row] = field(default_factory=list)           # "user · project" by idle cost, biggest first
    budgets: MonthBudgets | None = None       # this month against fleet.toml [budgets] (the CLI adds it)

    @property
    def empty(self) -> bool:
        return self.entries == 0


def _group_key(g: dict, by: str) -> str:
    return {"project": g["project"], "user": g["owner"], "template": g["template"], "day": g["day"],
            "run": g["run_key"]}[by]


def _key(entry, by: str) -> str:
    if by == "project":
        return entry.project
    if by == "user":
        return entry.owner
    if by == "template":
        return entry.template
    if by == "day":
        return entry.start_at[:10]
    if entry.run_id:
        return entry.run_id
    from ..money.ledger import KEPT_SUFFIX
    return f"(lease {entry.lease_id}, {'kept, idle' if entry.segment_id.endswith(KEPT_SUFFIX) else 'no run'})"


def _settle_kept(ledger: Ledger) -> None:
    """Kept leases whose deadline passed are billed up to it before the report reads the ledger
    (another computer's `fleet` may never have come back to them)."""
    from ..money.kept import settle_expired
    try:
        settle_expired(ledger.db, ledger.clock())
    except Exception:  # noqa: BLE001 — a read-only report still shows what is recorded
        pass


def parse_when(text: str | None, *, now: datetime | None = None) -> datetime | None:
    """--since/--until: an ISO date or time (UTC unless it says otherwise), or `7d` / `12h` ago."""
    if text is None or text == "":
        return None
    now = now or datetime.now(timezone.utc)
    hint = "use a date like 2025-06-01, an ISO time, or 7d"
    rel = re.fullmatch(r"\s*(\d+)\s*([dhm])\s*", text)
    try:
        if rel:
            unit = {"d": "days", "h": "hours", "m": "minutes"}[rel.group(2)]
            when = now - timedelta(**{unit: int(rel.group(1))})
        else:
            when = parse_iso(text.strip())
        # The report works in UTC days, a day either side: `99999999999999d`, 0001-01-01T00:00+01:00 (before
        # year 1 in UTC) and 9999-12-31T23:59-14:00 (after 9999) were `internal error: OverflowError`.
        when = when.astimezone(timezone.utc)
        if not _EARLIEST <= when <= _LATEST:
            raise OverflowError
    except OverflowError:
        raise UsageError(f"cannot read time {text!r}: outside 0001-01-02…9999-12-30 UTC", hint=hint) from None
    except ValueError:
        raise UsageError(f"cannot read time {text!r}", hint=hint) from None
    return when


_EARLIEST = datetime(1, 1, 2, tzinfo=timezone.utc)
_LATEST = datetime(9999, 12, 30, tzinfo=timezone.utc)


MAX_EXCLUDED = 900   # damaged rows left out by id in SQL; beyond this, fall back to row by row


def build_report(ledger: Ledger, *, by: str = "project", since: datetime | None = None,
                 until: datetime | None = None, top: int = 10, now: datetime | None = None) -> Report:
    if by not in GROUPS:
        raise UsageError(f"cannot group a report by {by!r}", hint="choose one of: " + ", ".join(GROUPS))
    if since and until and until <= since:
        raise UsageError("--until must be later than --since")
    _settle_kept(ledger)
    gathered = gather(ledger, since, until, max_excluded=MAX_EXCLUDED, now=now)
    if gathered is None:
        return build_report_rowwise(ledger, by=by, since=since, until=until, top=top)
    found, corrupt = gathered
    groups: dict[str, Row] = {}
    projects: dict[str, Row] = {}
    runs: dict[str, Row] = {}
    days: dict[str, Row] = {}
    payers: dict[str, Row] = {}
    daily = _Daily()
    who: dict[str, tuple[str, str]] = {}
    total = Row("total")
    entries = 0
    for g in found:
        entries += int(g["entries"])
        for table, key in ((groups, _group_key(g, by)), (projects, g["project"]), (runs, g["run_key"]),
                           (days, g["day"]), (payers, _payer(g["owner"], g["project"]))):
            row = table.get(key)
            if row is None:
                row = table[key] = Row(key)
            row.add_group(g)
        total.add_group(g)
        daily.add(g["project"], g["day"], int(g["cost_micro"] or 0), bool(int(g["shadow"])))
        who.setdefault(g["run_key"], (g["project"], g["owner"]))
    return _assemble(ledger, by, since, until, top, groups, projects, runs, days, daily, total,
                     [str(c) for c in corrupt], entries, payers, who)


def build_report_rowwise(ledger: Ledger, *, by: str = "project", since: datetime | None = None,
                         until: datetime | None = None, top: int = 10) -> Report:
    """The same report summed entry by entry in Python (many damaged rows; and a cross-check in tests)."""
    from .clip import clipped_entries
    read = ledger.read(since=since, until=until)
    entries, straddling_bad = clipped_entries(ledger, since, until, read.entries)
    groups: dict[str, Row] = {}
    projects: dict[str, Row] = {}
    runs: dict[str, Row] = {}
    days: dict[str, Row] = {}
    payers: dict[str, Row] = {}
    daily = _Daily()
    who: dict[str, tuple[str, str]] = {}
    total = Row("total")
    for e, f in entries:      # a row straddling since or until counts its share inside the period
        cost = e.cost_micro if f == 1.0 else round(e.cost_micro * f)
        idle = None if e.idle_gpu_s is None else e.idle_gpu_s * f
        args = (cost, e.shadow, e.seconds * f, e.gpus, e.gpu_util_permille, idle, _key(e, "run"))
        day = e.start_at[:10]
        for table, key in ((groups, _key(e, by)), (projects, e.project), (runs, _key(e, "run")), (days, day),
                           (payers, _payer(e.owner, e.project))):
            row = table.get(key)
            if row is None:
                row = table[key] = Row(key)
            row.add(*args)
        total.add(*args)
        daily.add(e.project, day, cost, e.shadow)
        who.setdefault(_key(e, "run"), (e.project, e.owner))
    from .accruing import open_groups     # kept and stranded time so far, as the rollup path adds it
    for g in open_groups(ledger, since, until):
        for table, key in ((groups, _group_key(g, by)), (projects, g["project"]), (runs, g["run_key"]),
                           (days, g["day"]), (payers, _payer(g["owner"], g["project"]))):
            table.setdefault(key, Row(key)).add_group(g)
        total.add_group(g)
        daily.add(g["project"], g["day"], int(g["cost_micro"]), bool(g["shadow"]))
        who.setdefault(g["run_key"], (g["project"], g["owner"]))
    return _assemble(ledger, by, since, until, top, groups, projects, runs, days, daily, total,
                     [str(c) for c in read.corrupt + straddling_bad], len(entries), payers, who)


def _payer(owner: str, project: str) -> str:
    return f"{owner} · {project}"


class _Daily:
    """Per project and day: everything, billed, and would cost (kept apart for the charts)."""

    def __init__(self):
        self.total: dict[str, dict[str, int]] = {}
        self.billed: dict[str, dict[str, int]] = {}
        self.would: dict[str, dict[str, int]] = {}

    def add(self, project: str, day: str, cost: int, shadow: bool) -> None:
        for table in (self.total, self.would if shadow else self.billed):
            per_day = table.setdefault(project, {})
            per_day[day] = per_day.get(day, 0) + cost


def _commands(ledger: Ledger, run_ids: list[str]) -> dict[str, str]:
    """The runs' commands as stored (secrets were masked before they were written)."""
    if not run_ids:
        return {}
    try:
        rows = ledger.db.execute(f"SELECT id, command FROM runs WHERE id IN ({','.join('?' * len(run_ids))})",
                                 list(run_ids))
    except Exception:   # noqa: BLE001 — a ledger-only database (tests, exports): no commands to show
        return {}
    return {r["id"]: r["command"] for r in rows}


def _assemble(ledger, by, since, until, top, groups, projects, runs, days, daily: _Daily, total, corrupt,
              entries, payers, who) -> Report:
    order = sorted(groups.values(), key=lambda r: r.key) if by == "day" else \
        sorted(groups.values(), key=lambda r: (-r.total_micro, r.key))
    top_runs = sorted(runs.values(), key=lambda r: (-r.total_micro, r.key))[:top]
    commands = _commands(ledger, [r.key for r in top_runs])
    return Report(
        by=by, since=since, until=until, rows=order, total=total,
        by_project=sorted(projects.values(), key=lambda r: (-r.total_micro, r.key)),
        top_runs=top_runs,
        days=sorted(days), daily_by_project=daily.total, daily_billed=daily.billed, daily_would=daily.would,
        daily_util={d: days[d].mean_gpu_util for d in sorted(days)},
        corrupt=corrupt, entries=entries,
        run_info={r.key: RunInfo(*who[r.key], commands.get(r.key)) for r in top_runs if r.key in who},
        idle_payers=sorted((p for p in payers.values() if p.idle_cost_micro > 0 or p.idle_gpu_s > 0),
                           key=lambda r: (-r.idle_cost_micro, -r.idle_gpu_s, r.key)))
