"""Spend against the monthly budgets of fleet.toml `[budgets]`, per project and per user, with a
forecast for the month's end at this month's burn rate so far.

Budgets count what fleet's budget enforcement counts (fleet/money/budget.py): billed money and simulated
machines' "would cost" alike. The two stay separate figures here, so a reader sees how much of a
budget's use is real money.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from ..money.budget import month_label, month_start, to_micro, utc_clock
from ..money.ledger import Ledger
from .rollup import gather

MIN_ELAPSED_S = 86400   # the first hours of a month say too little about its rate: count at least a day


@dataclass
class BudgetLine:
    scope: str                 # "project" | "user"
    name: str
    limit_micro: int | None    # None: no budget of this kind in fleet.toml
    billed_micro: int = 0
    would_micro: int = 0
    forecast_micro: int = 0    # counted spend at the month's end if this month's daily rate goes on

    @property
    def counted_micro(self) -> int:
        """What the budget sees: billed plus would cost."""
        return self.billed_micro + self.would_micro

    @property
    def used_fraction(self) -> float | None:
        return None if not self.limit_micro else self.counted_micro / self.limit_micro

    @property
    def forecast_over(self) -> bool:
        return self.limit_micro is not None and self.forecast_micro > self.limit_micro


@dataclass
class MonthBudgets:
    month: str                 # "2026-12"
    now: datetime
    elapsed_s: float
    month_s: float
    lines: list[BudgetLine] = field(default_factory=list)

    @property
    def any_limit(self) -> bool:
        return any(line.limit_micro is not None for line in self.lines)


def _next_month(start: datetime) -> datetime:
    return (start + timedelta(days=32)).replace(day=1)


def month_budgets(ledger: Ledger, *, project_monthly: Decimal | None = None, user_monthly: Decimal | None = None,
                  now: datetime | None = None, until: datetime | None = None) -> MonthBudgets:
    """Every project and user with ledger entries this month (UTC), against the fleet.toml limits
    (`project_monthly` applies to each project, `user_monthly` to each user). `until`: a report's
    end inside the month, after which nothing counts (its spend and forecast are as of then)."""
    now = (now or utc_clock()).astimezone(timezone.utc)
    start = month_start(now)
    end = _next_month(start)
    upto = end if until is None else max(start, min(end, until))
    gathered = gather(ledger, start, upto, now=now)
    if gathered is None:     # too many damaged rows to leave out by id: sum the verified rows instead
        from .accruing import open_groups
        from .clip import clipped_entries
        entries, _ = clipped_entries(ledger, start, upto, ledger.read(since=start, until=upto).entries)
        groups = [{"project": e.project, "owner": e.owner, "shadow": e.shadow,
                   "cost_micro": e.cost_micro if f == 1.0 else round(e.cost_micro * f)}
                  for e, f in entries] + open_groups(ledger, start, upto)
    else:
        groups = gathered[0]
    limits = {"project": None if project_monthly is None else to_micro(project_monthly),
              "user": None if user_monthly is None else to_micro(user_monthly)}
    lines: dict[tuple[str, str], BudgetLine] = {}
    for g in groups:
        for scope, name in (("project", g["project"]), ("user", g["owner"])):
            line = lines.get((scope, name))
            if line is None:
                line = lines[(scope, name)] = BudgetLine(scope, name, limits[scope])
            cost = int(g["cost_micro"] or 0)
            if int(g["shadow"]):
                line.would_micro += cost
            else:
                line.billed_micro += cost
    elapsed = max((now - start).total_seconds(), MIN_ELAPSED_S)
    month_s = (end - start).total_seconds()
    for line in lines.values():
        line.forecast_micro = max(line.counted_micro, round(line.counted_micro * month_s / min(elapsed, month_s)))
    ordered = sorted(lines.values(), key=lambda b: (b.scope != "project", -(b.used_fraction or 0),
                                                    -b.counted_micro, b.name))
    return MonthBudgets(month_label(now), now, elapsed, month_s, ordered)


def month_budgets_until(ledger: Ledger, until: datetime | None, budgets=None) -> MonthBudgets:
    """The month of a report ending at `until` (default now), against a config's `[budgets]`
    (None: spend only, no limits)."""
    now = utc_clock() if until is None else min(utc_clock(), until - timedelta(microseconds=1))
    return month_budgets(ledger, project_monthly=budgets.project_monthly if budgets else None,
                         user_monthly=budgets.user_monthly if budgets else None, now=now, until=until)
