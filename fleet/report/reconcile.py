"""`fleet report --reconcile`: the ledger's billed cost per project next to what AWS Cost Explorer
billed for resources tagged `fleet:project` (the tag must be activated as a cost allocation tag).

Only billed AWS entries of the ledger take part (local machines' "would cost" is not money).
Cost Explorer periods are whole UTC days, end exclusive, so the ledger side is cut the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

from ..money.budget import from_micro, to_micro
from ..errors import EnvironmentProblem, UsageError
from ..money.ledger import Ledger
from ..render import RIGHT, Column, Records, Table

TAG = "fleet:project"
METRIC = "UnblendedCost"


@dataclass
class ReconcileRow:
    project: str
    ledger_usd: Decimal
    billed_usd: Decimal

    @property
    def difference_usd(self) -> Decimal:
        return self.billed_usd - self.ledger_usd

    def as_dict(self) -> dict:
        return {"project": self.project, "ledger_usd": str(self.ledger_usd), "billed_usd": str(self.billed_usd),
                "difference_usd": str(self.difference_usd)}


def period_days(since: datetime | None, until: datetime | None, *, today: date | None = None) -> tuple[date, date]:
    """Whole days for Cost Explorer: default the current month up to and including today."""
    today = today or datetime.now(timezone.utc).date()
    start = since.astimezone(timezone.utc).date() if since else today.replace(day=1)
    end = until.astimezone(timezone.utc).date() if until else today + timedelta(days=1)
    if end <= start:
        raise UsageError("the reconcile period is empty", hint="--until must be at least a day after --since")
    return start, end


def billed_by_project(ce, start: date, end: date) -> dict[str, Decimal]:
    """Sum Cost Explorer's cost per `fleet:project` tag value over the period (all pages)."""
    totals: dict[str, Decimal] = {}
    kwargs = {"TimePeriod": {"Start": start.isoformat(), "End": end.isoformat()}, "Granularity": "DAILY",
              "Metrics": [METRIC], "GroupBy": [{"Type": "TAG", "Key": TAG}]}
    while True:
        page = ce.get_cost_and_usage(**kwargs)
        for period in page.get("ResultsByTime", []):
            for group in period.get("Groups", []):
                key = (group.get("Keys") or [""])[0]
                project = key.split("$", 1)[1] if "$" in key else key
                amount = Decimal(str(group.get("Metrics", {}).get(METRIC, {}).get("Amount", "0")))
                totals[project or "(untagged)"] = totals.get(project or "(untagged)", Decimal(0)) + amount
        token = page.get("NextPageToken")
        if not token:
            return totals
        kwargs["NextPageToken"] = token


def reconcile(ledger: Ledger, ce, *, since: datetime | None = None, until: datetime | None = None,
              today: date | None = None) -> list[ReconcileRow]:
    start, end = period_days(since, until, today=today)
    read = ledger.read(since=datetime(start.year, start.month, start.day, tzinfo=timezone.utc),
                       until=datetime(end.year, end.month, end.day, tzinfo=timezone.utc))
    ours: dict[str, int] = {}
    for e in read.entries:
        if e.provider == "aws" and not e.shadow:
            ours[e.project] = ours.get(e.project, 0) + e.cost_micro
    try:
        billed = billed_by_project(ce, start, end)
    except Exception as exc:   # botocore errors: no credentials, no access, endpoint down
        raise EnvironmentProblem(f"Cost Explorer is not reachable: {type(exc).__name__}: {exc}",
                                 hint="check AWS credentials and ce:GetCostAndUsage permission") from None
    projects = sorted(set(ours) | set(billed))
    return [ReconcileRow(p, from_micro(ours.get(p, 0)),
                         from_micro(to_micro(billed.get(p, Decimal(0))))) for p in projects]


def cost_explorer_client(region: str | None = None):
    from ..boto_sessions import new_session   # only when --reconcile asks for it
    return new_session().client("ce", region_name=region or "us-east-1")


def reconcile_table(rows: list[ReconcileRow]) -> Table:
    """Ledger against Cost Explorer per project; CSV/JSON carry the same figures under `reconcile`."""
    fields = ("project", "ledger_usd", "billed_usd", "difference_usd")
    data = [r.as_dict() for r in rows]
    return Table([Column("project"), *(Column(f, align=RIGHT) for f in fields[1:])],
                 [[d[f] for f in fields] for d in data], title="ledger against AWS Cost Explorer, by fleet:project",
                 empty="no AWS cost in this period (ledger or Cost Explorer)",
                 records=Records(fields, data, rows_key="reconcile"))
