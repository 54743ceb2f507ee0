"""`fleet runs ls/show`, `fleet rerun RUN`, `fleet audit [RUN] [--verify]`: run records and lineage."""
from __future__ import annotations

from typing import Optional

import typer

runs_app = typer.Typer(help="Run records: what ran, on which pinned code and data, with what result.",
                       no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(runs_app, name="runs")
    app.command()(rerun)
    app.command()(audit)


def _short(sid: str | None) -> str:
    return sid[:12] if sid else "-"


@runs_app.command("ls")
def ls(json_out: bool = typer.Option(False, "--json"), limit: int = typer.Option(50, "--limit"),
       project: Optional[str] = typer.Option(None, "--project")) -> int:
    """List run records, newest first."""
    from ..records.chain import list_records
    recs = list_records(limit=limit, project=project)
    if json_out:
        from .render import print_json
        print_json({"runs": [dict(r.body(), seq=r.seq, hash=r.hash) for r in recs]})
        return 0
    if not recs:
        typer.echo("no run records")
        return 0
    from rich.console import Console
    from rich.table import Table
    table = Table(title_justify="left")
    for col in ("run", "project", "status", "exit", "commit", "data", "outputs", "started", "user"):
        table.add_column(col, no_wrap=col in ("run", "status", "started"))
    for r in recs:
        table.add_row(r.run_id, r.project, r.status or "-", str(r.exit_status), (r.code_commit or "dir")[:10],
                      ", ".join(f"{k}={_short(v)}" for k, v in sorted(r.data_snapshots.items())) or "-",
                      _short(r.output_snapshot), (r.started_at or "-")[:19], r.user)
    Console().print(table)
    return 0


@runs_app.command("show")
def show(run: str = typer.Argument(..., help="Run id (or unique prefix)."),
         json_out: bool = typer.Option(False, "--json")) -> int:
    """Show one run's record."""
    from ..records.chain import get_record
    rec = get_record(run)
    body = dict(rec.body(), seq=rec.seq, hash=rec.hash)
    if json_out:
        from .render import print_json
        print_json(body)
        return 0
    for key in ("run_id", "status", "exit_status", "command", "project", "user", "provider", "template",
                "machine_types", "image_id", "code_commit", "code_subdir", "code_snapshot", "code_dirty_snapshot",
                "data_snapshots", "output_snapshot", "store", "config_hash", "started_at", "ended_at", "cost_usd",
                "rerun_of", "ci", "prev_hash", "hash"):
        value = body.get(key)
        if value not in (None, "", {}, []):
            typer.echo(f"{key:20} {value}")
    return 0


def rerun(
    run: str = typer.Argument(..., help="The run to repeat (see `fleet runs ls`)."),
    keep: Optional[str] = typer.Option(None, "--keep", help="Keep the lease up this long after the run."),
    ci: bool = typer.Option(False, "--ci", help="CI mode: plain progress lines."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> int:
    """Lease fresh machines and run a recorded run again on byte-identical inputs (verified by hash)."""
    from ..config.schema import parse_duration
    from ..records.lineage import rerun as do_rerun
    from .render import is_ci
    from .up import _events, _show
    events = _events(json_out, ci)
    try:
        summary = do_rerun(run, events=events, keep_s=parse_duration(keep) if keep else None, ci=ci or is_ci())
    finally:
        events.close()
    _show(summary, json_out)
    if not json_out and summary.outputs_identical is not None:
        differ = summary.outputs_differ or []
        verdict = "identical to" if summary.outputs_identical else \
            f"DIFFERENT from ({len(differ)} files: {', '.join(differ[:5])})"
        typer.echo(f"fleet: outputs {verdict} run {summary.rerun_of}'s", err=True)
    return summary.exit_code


def _cost(r: dict) -> str:
    if r.get("cost_usd") is None:
        return "not recorded"
    if r.get("cost_shadow"):
        return f"${r['cost_usd']} (would cost: these machines carry a shadow price, nothing was billed)"
    return f"${r['cost_usd']}"


def _markdown(a: dict) -> str:
    r = a["record"]
    lines = [f"# Run {r['run_id']}", "",
             f"- **Status**: {r.get('status')} (exit {r.get('exit_status')})",
             f"- **Command**: `{r.get('command')}`",
             f"- **Who / when**: {r.get('user')}, {r.get('started_at')} → {r.get('ended_at')}",
             f"- **Where**: {r.get('provider')} / {r.get('template')} ({', '.join(r.get('machine_types') or [])})"
             + (f", image {r['image_id']}" if r.get("image_id") else ""),
             f"- **Code**: commit `{r.get('code_commit') or 'none (directory snapshot)'}`"
             + (f" in `{r['code_subdir']}`" if r.get("code_subdir") else ""),
             f"- **Config hash**: `{r.get('config_hash')}`",
             f"- **Cost**: {_cost(r)}",
             f"- **Rerun of**: {r.get('rerun_of') or '-'}", "",
             "## Snapshots", "", "| role | id | files | bytes | intact |", "|---|---|---|---|---|"]
    for s in a["snapshots"]:
        lines.append(f"| {s['role']} | `{s['id']}` | {s.get('files', '?')} | {s.get('size', '?')} | "
                     f"{'yes' if s['present'] else 'NO: ' + '; '.join(s['problems'])} |")
    lines += ["", "## Record chain", "", f"- record #{a['seq']}, hash `{a['hash']}`",
              f"- previous hash `{r.get('prev_hash')}`",
              f"- chain: {'intact' if a['chain_ok'] else 'BROKEN: ' + '; '.join(a['chain_problems'])}"]
    if r.get("ci"):
        lines += ["", "## CI", ""] + [f"- {k}: {v}" for k, v in sorted(r["ci"].items())]
    return "\n".join(lines) + "\n"


def audit(
    run: Optional[str] = typer.Argument(None, help="The run whose lineage to print."),
    verify: bool = typer.Option(False, "--verify", help="Check every record's chain and every referenced snapshot."),
    deep: bool = typer.Option(False, "--deep", help="With --verify: re-hash every chunk, not just check presence."),
    json_out: bool = typer.Option(False, "--json"),
    md: bool = typer.Option(False, "--md", help="Markdown (the default for a run)."),
) -> int:
    """Print a run's lineage, or verify the whole record chain and its snapshots (--verify)."""
    from ..errors import UsageError
    from ..records.lineage import audit as audit_run
    from ..records.lineage import audit_verify, raise_if_bad
    if verify:
        result = audit_verify(deep=deep)
        if json_out:
            from .render import print_json
            print_json(result)
        else:
            for p in result["chain_problems"] + result["snapshot_problems"] + result.get("anchor_notes", []):
                typer.echo(p, err=True)
            if result["ok"]:
                typer.echo(f"{result['records']} run records: chain intact; "
                           f"{result['snapshots_checked']} referenced snapshots present")
        raise_if_bad(result)
        return 0
    if not run:
        raise UsageError("name a run to audit, or pass --verify", hint="see `fleet runs ls`")
    a = audit_run(run)
    if json_out:
        from .render import print_json
        print_json(a)
    else:
        typer.echo(_markdown(a), nl=False)
    return 0
