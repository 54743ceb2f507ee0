"""`fleet report` (cost and GPU-hours for managers) and `fleet budget` (spend against budgets)."""
from __future__ import annotations

import os
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
    """-o PATH: a regular file whole or not at all, a device or FIFO written into (render.output_file)."""
    from ..render.output_file import write_output
    try:
        write_output(path, text)
    except OSError as exc:   # exit 3, as `config schema -o` and `init`: the path here is unusable
        from ..errors import EnvironmentProblem
        raise EnvironmentProblem(f"cannot write {path}: {exc.strerror or exc}") from None


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
    from ..render import check_format
    from ..report import build_report, parse_when, render
    if json_out and fmt.lower() not in ("table", "json"):   # two answers asked for: neither is guessed
        from ..errors import UsageError
        raise UsageError(f"--json and --format {fmt} ask for two formats", hint="give one of them")
    fmt = check_format("json" if json_out else fmt, "report format")
    ledger = _ledger()
    start, end = parse_when(since), parse_when(until)
    from ..render.output_file import means_stdout
    to_stdout = means_stdout(output)
    output = None if to_stdout else output
    if verify:
        return _verify(ledger, start, end, fmt == "json")
    if reconcile:
        return _reconcile(ledger, start, end, fmt, output, region)
    rep = build_report(ledger, by=by, since=start, until=end)
    if fmt == "html":
        from ..report.budgets import month_budgets_until
        rep.budgets = month_budgets_until(ledger, end, _config_budgets())
        if output is None and not to_stdout:
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
    found = _experiment_config()           # from a subdirectory: the experiment's runs/, not sub/runs/
    folder = (found.parent if found else Path(".")) / "runs" / "reports"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from ..errors import EnvironmentProblem
        raise EnvironmentProblem(f"cannot create {folder}: {exc.strerror or exc}", hint="pass -o PATH") from None
    return folder / f"fleet-report-{stamp}.html"


def _experiment_config() -> Path | None:
    """The fleet.toml of the experiment this directory is in: here, or in the nearest parent up to
    the git repository's top (a report run from `src/` belongs to the experiment above it)."""
    here = Path.cwd().resolve()
    for d in (here, *here.parents):
        if os.path.lexists(d / "fleet.toml"):   # there but unreadable: refused by the load, never skipped
            return d / "fleet.toml"
        if (d / ".git").exists():
            return None
    return None


def _config_budgets():
    """[budgets] of the experiment's fleet.toml, read and validated as `fleet up` would; no file: no budgets."""
    from ..config.loader import load_config
    found = _experiment_config()
    if found is None:
        return None
    return load_config(found, overrides={"command": ["true"]}).budgets


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
    from ..render import render
    from ..report.reconcile import cost_explorer_client, reconcile, reconcile_table
    text = render(reconcile_table(reconcile(ledger, cost_explorer_client(region), since=start, until=end)), fmt)
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
    from ..config.loader import load_config
    from ..money.standing import budget_standing
    from ..plan import current_user
    config = load_config(file, overrides={"command": ["true"]})
    standing = budget_standing(config, _ledger(), user=current_user(config.user))
    if json_out:
        from .render import print_json
        print_json(standing.to_json())
        return 0
    for line in standing.lines():
        typer.echo(line)
    return 0
