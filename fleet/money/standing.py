"""`fleet budget`: where this month's spending stands against the budgets of a config, for the
project and user a run would be charged to. The same scopes the budget gate of a run checks
(metering.build_scopes), with live runs' reservations counted as held."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from .budget import Scope, format_usd, from_micro, month_label, month_start, utc_clock
from .ledger import Ledger


@dataclass(frozen=True)
class BudgetStanding:
    month: str                   # "2026-12"
    project: str
    user: str
    project_spent_micro: int     # the project's spend this month, whatever its budgets
    run_budget_usd: Decimal | None
    scopes: tuple[Scope, ...]    # the monthly budgets that apply (none: no [budgets] limits)

    def to_json(self) -> dict:
        return {"month": self.month, "project": self.project, "user": self.user,
                "project_spent_usd": str(from_micro(self.project_spent_micro)),
                "run_budget_usd": None if self.run_budget_usd is None else str(self.run_budget_usd),
                "budgets": [{"scope": s.name, "limit_usd": str(from_micro(s.limit_micro)),
                             "spent_usd": str(from_micro(s.spent_before_micro)),
                             "reserved_usd": str(from_micro(s.reserved_micro)),
                             "kept_usd": str(from_micro(s.kept_micro)),
                             "remaining_usd": str(from_micro(s.remaining(0)))} for s in self.scopes]}

    def lines(self) -> list[str]:
        out = [f"{self.month}: project {self.project!r} spent {format_usd(self.project_spent_micro)}"]
        if self.run_budget_usd is not None:
            out.append(f"per-run budget: {format_usd(int(self.run_budget_usd * 1_000_000))}")
        for s in self.scopes:
            held = (f", {format_usd(s.reserved_micro)} reserved by live runs" if s.reserved_micro else "") + \
                (f", {format_usd(s.kept_micro)} held by kept leases to their deadlines" if s.kept_micro else "")
            out.append(f"{s.name}: {format_usd(s.spent_before_micro)} of {format_usd(s.limit_micro)} "
                       f"({format_usd(max(s.remaining(0), 0))} left{held})")
        if not self.scopes:
            out.append("no monthly budgets set ([budgets] project_monthly / user_monthly in fleet.toml)")
        return out


def budget_standing(config, ledger: Ledger, *, user: str, now: datetime | None = None) -> BudgetStanding:
    """This month's standing for `config`'s project and `user` (a run budget has no spend until a
    run starts, so only the monthly scopes are listed)."""
    from .metering import BudgetLimits, build_scopes
    from .reservations import Reservations
    now = now or utc_clock()
    limits = replace(BudgetLimits.from_config(config), run=None)
    scopes = build_scopes(limits, project=config.project, user=user, ledger=ledger, now=now,
                          reservations=Reservations(ledger.db))   # live runs' claims are not free money
    spent = ledger.spent_micro(project=config.project, since=month_start(now))
    return BudgetStanding(month_label(now), config.project, user, spent, config.budget, tuple(scopes))
