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
from ..ledger import Ledger, parse_iso
from ..telemetry import IDLE_PERCENT
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
        if run:
            self.runs.add(run)

    @property
    def total_micro(self) -> int:
        return self.cost_micro + self.would_cost_micro

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
    daily_util: dict[str, float | None]          # day → mean GPU utilisation %
    corrupt: list[str]
    entries: int
    idle_percent: float = IDLE_PERCENT

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
    return entry.run_id or f"(lease {entry.lease_id}, no run)"


def parse_when(text: str | None, *, now: datetime | None = None) -> datetime | None:
    """--since/--until: an ISO date or time (UTC unless it says otherwise), or `7d` / `12h` ago."""
    if text is None or text == "":
        return None
    now = now or datetime.now(timezone.utc)
    rel = re.fullmatch(r"\s*(\d+)\s*([dhm])\s*", text)
    if rel:
        unit = {"d": "days", "h": "hours", "m": "minutes"}[rel.group(2)]
        return now - timedelta(**{unit: int(rel.group(1))})
    try:
        return parse_iso(text.strip())
    except ValueError:
        raise UsageError(f"cannot read time {text!r}", hint="use a date like 2025-06-01, an ISO time, or 7d") from None


MAX_EXCLUDED = 900   # damaged rows left out by id in SQL; beyond this, fall back to row by row


def build_report(ledger: Ledger, *, by: str = "project", since: datetime | None = None,
                 until: datetime | None = None, top: int = 10, now: datetime | None = None) -> Report:
    if by not in GROUPS:
        raise UsageError(f"cannot group a report by {by!r}", hint="choose one of: " + ", ".join(GROUPS))
    if since and until and until <= since:
        raise UsageError("--until must be later than --since")
    gathered = gather(ledger, since, until, max_excluded=MAX_EXCLUDED, now=now)
    if gathered is None:
        return build_report_rowwise(ledger, by=by, since=since, until=until, top=top)
    found, corrupt = gathered
    groups: dict[str, Row] = {}
    projects: dict[str, Row] = {}
    runs: dict[str, Row] = {}
    days: dict[str, Row] = {}
    daily_by_project: dict[str, dict[str, int]] = {}
    total = Row("total")
    entries = 0
    for g in found:
        entries += int(g["entries"])
        for table, key in ((groups, _group_key(g, by)), (projects, g["project"]), (runs, g["run_key"]),
                           (days, g["day"])):
            row = table.get(key)
            if row is None:
                row = table[key] = Row(key)
            row.add_group(g)
        total.add_group(g)
        per_day = daily_by_project.setdefault(g["project"], {})
        per_day[g["day"]] = per_day.get(g["day"], 0) + int(g["cost_micro"] or 0)
    return _assemble(by, since, until, top, groups, projects, runs, days, daily_by_project, total,
                     [str(c) for c in corrupt], entries)


def build_report_rowwise(ledger: Ledger, *, by: str = "project", since: datetime | None = None,
                         until: datetime | None = None, top: int = 10) -> Report:
    """The same report summed entry by entry in Python (many damaged rows; and a cross-check in tests)."""
    read = ledger.read(since=since, until=until)
    groups: dict[str, Row] = {}
    projects: dict[str, Row] = {}
    runs: dict[str, Row] = {}
    days: dict[str, Row] = {}
    daily_by_project: dict[str, dict[str, int]] = {}
    total = Row("total")
    for e in read.entries:
        args = (e.cost_micro, e.shadow, e.seconds, e.gpus, e.gpu_util_permille, e.idle_gpu_s, _key(e, "run"))
        day = e.start_at[:10]
        for table, key in ((groups, _key(e, by)), (projects, e.project), (runs, _key(e, "run")), (days, day)):
            row = table.get(key)
            if row is None:
                row = table[key] = Row(key)
            row.add(*args)
        total.add(*args)
        per_day = daily_by_project.setdefault(e.project, {})
        per_day[day] = per_day.get(day, 0) + e.cost_micro
    return _assemble(by, since, until, top, groups, projects, runs, days, daily_by_project, total,
                     [str(c) for c in read.corrupt], len(read.entries))


def _assemble(by, since, until, top, groups, projects, runs, days, daily_by_project, total, corrupt,
              entries) -> Report:
    order = sorted(groups.values(), key=lambda r: r.key) if by == "day" else \
        sorted(groups.values(), key=lambda r: (-r.total_micro, r.key))
    return Report(
        by=by, since=since, until=until, rows=order, total=total,
        by_project=sorted(projects.values(), key=lambda r: (-r.total_micro, r.key)),
        top_runs=sorted(runs.values(), key=lambda r: (-r.total_micro, r.key))[:top],
        days=sorted(days), daily_by_project=daily_by_project,
        daily_util={d: days[d].mean_gpu_util for d in sorted(days)},
        corrupt=corrupt, entries=entries)
