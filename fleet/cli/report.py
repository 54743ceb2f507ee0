"""`fleet report` (cost and GPU-hours for managers) and `fleet budget` (spend against budgets)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    app.command()(report)
    app.command()(budget)


def _ledger():
    from ..money.ledger import Ledger
    from ..state import open_state
    return Ledger(open_state().db)


def _write_file(path: Path, text: str) -> None:
    """Write beside, then rename: an existing report is never left half-written."""
    import os
    path = path.expanduser()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        from ..errors import UsageError
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


def report(
    by: str = typer.Option("project", "--by", help="Group by project, user, run, template or day."),
    since: Optional[str] = typer.Option(None, "--since", help="Start (inclusive): 2025-06-01, an ISO time, or 7d."),
    until: Optional[str] = typer.Option(None, "--until", help="End (exclusive): 2025-07-01, an ISO time, or 1d."),
    fmt: str = typer.Option("table", "--format", help="table, csv, json, md or html."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
    reconcile: bool = typer.Option(False, "--reconcile", help="Compare with AWS Cost Explorer by fleet:project."),
    region: Optional[str] = typer.Option(None, "--region", help="Cost Explorer region (default us-east-1)."),
    json_out: bool = typer.Option(False, "--json", help="Same as --format json."),
    verify: bool = typer.Option(False, "--verify", help="Re-check every ledger row's digest; exit 5 if any is damaged."),
) -> int:
    """Cost and GPU-hours from the ledger, for managers. An empty period gives an empty report."""
    from ..errors import UsageError
    from ..report import FORMATS, build_report, parse_when, render
    if json_out:
        fmt = "json"
    if fmt not in FORMATS:
        raise UsageError(f"unknown report format {fmt!r}", hint="choose one of: " + ", ".join(FORMATS))
    ledger = _ledger()
    start, end = parse_when(since), parse_when(until)
    if verify:
        return _verify(ledger, start, end, fmt == "json")
    if reconcile:
        return _reconcile(ledger, start, end, fmt, output, region)
    rep = build_report(ledger, by=by, since=start, until=end)
    if fmt == "html":
        rep.budgets = _month_budgets(ledger, end)
        if output is None:
            output = _default_html_path()
    text = render(rep, fmt)
    if output is not None:
        _write_file(output, text)
        typer.echo(f"wrote {output}", err=True)
    else:
        typer.echo(text, nl=not text.endswith("\n"))
    return 0


def _default_html_path() -> Path:
    """runs/reports/ here, beside fleet.toml: fleet's own output directory, which code pinning
    leaves out, so a report never makes the next `fleet up` see a dirty tree."""
    from datetime import datetime, timezone
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    folder = Path("runs") / "reports"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from ..errors import UsageError
        raise UsageError(f"cannot create {folder}: {exc.strerror or exc}", hint="pass -o PATH") from None
    return folder / f"fleet-report-{stamp}.html"


def _month_budgets(ledger, end):
    """This month's spend per project and user against fleet.toml [budgets] (none: spend only)."""
    from datetime import timedelta

    from ..money.budget import utc_clock
    from ..report.budgets import month_budgets
    now = utc_clock() if end is None else min(utc_clock(), end - timedelta(microseconds=1))
    project_monthly = user_monthly = None
    budgets = _config_budgets()
    if budgets is not None:
        project_monthly, user_monthly = budgets.project_monthly, budgets.user_monthly
    return month_budgets(ledger, project_monthly=project_monthly, user_monthly=user_monthly, now=now)


def _config_budgets():
    """[budgets] of ./fleet.toml, read and validated as `fleet up` would; no file: no budgets."""
    from ..config.loader import CONFIG_FILE, load_config
    if not Path(CONFIG_FILE).is_file():
        return None
    return load_config(None, overrides={"command": ["true"]}).budgets


def _verify(ledger, start, end, as_json: bool) -> int:
    from ..errors import IntegrityError
    damaged = ledger.verify(since=start, until=end)
    if as_json:
        import json
        typer.echo(json.dumps({"damaged": [{"id": c.id, "reason": c.reason} for c in damaged]}, indent=2))
    else:
        for c in damaged:
            typer.echo(str(c))
    if damaged:
        raise IntegrityError(f"{len(damaged)} damaged ledger row(s)",
                             hint="their sealed sums still count in reports; see the rows listed")
    if not as_json:
        typer.echo("every ledger row matches its digest")
    return 0


def _reconcile(ledger, start, end, fmt: str, output: Optional[Path], region: Optional[str]) -> int:
    import json

    from ..report.reconcile import cost_explorer_client, reconcile
    rows = reconcile(ledger, cost_explorer_client(region), since=start, until=end)
    if fmt == "json":
        text = json.dumps({"reconcile": [r.as_dict() for r in rows]}, indent=2) + "\n"
    elif fmt in ("csv", "md", "html", "table"):
        header = ["project", "ledger_usd", "billed_usd", "difference_usd"]
        if fmt == "csv":
            text = ",".join(header) + "\n" + "".join(
                ",".join(str(r.as_dict()[h]) for h in header) + "\n" for r in rows)
        else:
            lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(str(r.as_dict()[h]) for h in header) + " |" for r in rows]
            text = "\n".join(lines) + "\n" if rows else "no AWS cost in this period (ledger or Cost Explorer)\n"
    if output is not None:
        _write_file(output, text)
    else:
        typer.echo(text, nl=False)
    return 0


def budget(
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="Config file (default ./fleet.toml)."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> int:
    """This month's spend against the project and user budgets in fleet.toml."""
    from ..money.budget import format_usd, from_micro, month_label, month_start, utc_clock
    from ..config.loader import load_config
    from ..money.reservations import Reservations
    from ..money.metering import BudgetLimits, build_scopes
    from ..plan import current_user
    config = load_config(file, overrides={"command": ["true"]})
    limits = BudgetLimits.from_config(config)
    limits.run = None   # a run budget has no spend until a run starts
    now = utc_clock()
    user = current_user(config.user)
    ledger = _ledger()
    scopes = build_scopes(limits, project=config.project, user=user, ledger=ledger, now=now,
                          reservations=Reservations(ledger.db))   # live runs' claims are not free money
    spent_project = ledger.spent_micro(project=config.project, since=month_start(now))
    rows = [{"scope": s.name, "limit_usd": str(from_micro(s.limit_micro)),
             "spent_usd": str(from_micro(s.spent_before_micro)), "reserved_usd": str(from_micro(s.reserved_micro)),
             "remaining_usd": str(from_micro(s.remaining(0)))}
            for s in scopes]
    if json_out:
        from .render import print_json
        print_json({"month": month_label(now), "project": config.project, "user": user,
                    "project_spent_usd": str(from_micro(spent_project)),
                    "run_budget_usd": None if config.budget is None else str(config.budget), "budgets": rows})
        return 0
    typer.echo(f"{month_label(now)}: project {config.project!r} spent {format_usd(spent_project)}")
    if config.budget is not None:
        typer.echo(f"per-run budget: {format_usd(int(config.budget * 1_000_000))}")
    for s in scopes:
        held = f", {format_usd(s.reserved_micro)} reserved by live runs" if s.reserved_micro else ""
        typer.echo(f"{s.name}: {format_usd(s.spent_before_micro)} of {format_usd(s.limit_micro)} "
                   f"({format_usd(max(s.remaining(0), 0))} left{held})")
    if not scopes:
        typer.echo("no monthly budgets set ([budgets] project_monthly / user_monthly in fleet.toml)")
    return 0
