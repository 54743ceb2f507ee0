"""`fleet runs ls/show`, `fleet rerun RUN`, `fleet audit [RUN] [--verify]`: run records and lineage."""
from __future__ import annotations

from typing import Optional

import typer

JsonOpt = typer.Option(False, "--json", help="Machine-readable output.")

runs_app = typer.Typer(help="Run records: what ran, on which pinned code and data, with what result.",
                       no_args_is_help=True)


def register(app: typer.Typer) -> None:
    from .runs_diff import register as register_diff
    register_diff(runs_app)
    from .runs_compare import register as register_compare
    register_compare(runs_app)
    app.add_typer(runs_app, name="runs")
    app.command()(rerun)
    app.command()(audit)


@runs_app.command("ls")
def ls(json_out: bool = JsonOpt, limit: int = typer.Option(50, "--limit", min=1, max=1_000_000,
                                                                     help="At most this many (default 50)."),
       project: Optional[str] = typer.Option(None, "--project", help="Only this project's runs.")) -> int:
    """List run records, newest first."""
    from ..records.chain import iter_records
    damaged: list[str] = []   # one unreadable record is named, not the end of the listing
    # Read a page at a time and shown as read: thousands of records are never all held at once.
    recs = iter_records(limit=limit, project=project, damaged=damaged, intact=True)
    if json_out:
        from ..records.views import record_json
        from .render import print_json_list
        print_json_list("runs", (record_json(r) for r in recs), lambda: {"damaged": damaged} if damaged else {})
        _warn_damaged(damaged)
        return 0
    from ..records.views import runs_table
    from .render import print_table
    table = runs_table(recs)    # the table's column widths need every row; rows, not records, are kept
    _warn_damaged(damaged)
    print_table(table)
    return 0


def _warn_damaged(damaged: list[str]) -> None:
    for line in damaged:
        typer.echo(f"fleet: warning: {line} (set aside; `fleet audit --verify` checks the chain)", err=True)


@runs_app.command("show")
def show(run: str = typer.Argument(..., help="Run id (or unique prefix)."),
         json_out: bool = JsonOpt) -> int:
    """Show one run's record."""
    from ..records.chain import get_record, verify_chain
    from ..records.views import record_json, record_lines
    rec = get_record(run)
    if json_out:
        from .render import print_json
        print_json(record_json(rec))
    else:
        from ..render.text import printable   # a teammate's record: its command may hold ESC sequences
        for line in record_lines(rec):
            typer.echo(printable(line))
    # Shown as the database holds it, but never passed off as the record written: the same check a
    # rerun makes of the chain from it to the tip (an edited record showed as if it were genuine).
    problems = verify_chain(from_seq=rec.seq)
    if problems:
        _untrusted(f"run {rec.run_id}'s record cannot be trusted", problems,
                   hint="what is shown is what the state database holds now; `fleet audit --verify` "
                        "lists every problem")
    return 0


def _untrusted(what: str, problems: list[str], hint: str | None = None) -> None:
    """Exit 5 (IntegrityError) naming the first problem and how many more there are."""
    from ..errors import IntegrityError
    more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
    raise IntegrityError(f"{what}: {problems[0]}{more}", hint=hint)


def rerun(
    run: str = typer.Argument(..., help="The run to repeat (see `fleet runs ls`)."),
    keep: Optional[str] = typer.Option(None, "--keep", help="Keep the lease up this long after the run."),
    ci: bool = typer.Option(False, "--ci", help="CI mode: plain progress lines."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    allow_image_change: bool = typer.Option(False, "--allow-image-change",
                                            help="Run even if the recorded image no longer exists (recorded)."),
    allow_package_change: bool = typer.Option(False, "--allow-package-change",
                                              help="Run the command even if packages still differ from the "
                                                   "recorded ones after the exact install (recorded)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before leasing (never asked in CI, with "
                                                        "--json, or when not on a terminal)."),
) -> int:
    """Lease fresh machines and run a recorded run again on byte-identical inputs (verified by hash)."""
    from ..records.lineage import rerun as do_rerun
    from .render import is_ci
    from .plan_view import confirmer
    from .up import _events, _show, flag_duration
    keep_s = flag_duration("--keep", keep)   # its errors name the flag, as `fleet up`'s do
    events = _events(json_out, ci)
    try:
        summary = do_rerun(run, events=events, keep_s=keep_s, ci=ci or is_ci(),
                           allow_image_change=allow_image_change, allow_package_change=allow_package_change,
                           confirm=confirmer(ask=not (yes or json_out or ci or is_ci())))
    finally:
        events.close()
    _show(summary, json_out)
    if not json_out and summary.outputs_identical is not None:
        differ = summary.outputs_differ or []
        verdict = "identical to" if summary.outputs_identical else \
            f"DIFFERENT from ({len(differ)} files: {', '.join(differ[:5])})"
        from ..render.text import printable_line
        typer.echo(printable_line(f"fleet: outputs {verdict} run {summary.rerun_of}'s"), err=True)
    return summary.exit_code


def audit(
    run: Optional[str] = typer.Argument(None, help="The run whose lineage to print."),
    verify: bool = typer.Option(False, "--verify", help="Check every record's chain and every referenced snapshot."),
    deep: bool = typer.Option(False, "--deep", help="With --verify: re-hash every chunk, not just check presence."),
    json_out: bool = JsonOpt,
    md: bool = typer.Option(False, "--md", help="Markdown (the default for a run)."),
) -> int:
    """Print a run's lineage, or verify the whole record chain and its snapshots (--verify)."""
    from ..errors import UsageError
    from ..records.lineage import audit as audit_run
    from ..records.lineage import audit_verify, raise_if_bad
    if verify and run:     # it checks the whole chain: a run named here was silently ignored
        raise UsageError("--verify checks every record and snapshot, not one run: drop RUN, or --verify",
                         hint="fleet audit --verify [--deep]; fleet audit RUN prints one run's lineage")
    if deep and not verify:
        raise UsageError("--deep goes with --verify", hint="fleet audit --verify --deep")
    if json_out and md:   # two answers asked for: neither is guessed (JSON was, silently)
        raise UsageError("--json and --md ask for two formats", hint="give one of them")
    if verify and md:     # --verify prints problem lines and a sum, never Markdown: --md was silently ignored
        raise UsageError("--md goes with a run's lineage; --verify prints plain lines",
                         hint="fleet audit --verify [--json]; fleet audit RUN --md")
    if verify:
        result = audit_verify(deep=deep)
        if json_out:
            from .render import print_json
            print_json(result)
        else:
            from ..render.text import printable_line
            for p in result["chain_problems"] + result["snapshot_problems"] + result.get("anchor_notes", []):
                typer.echo(printable_line(p), err=True)
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
        from ..records.views import audit_markdown
        from ..render.text import printable   # the record's command, user, data names: shown, not obeyed
        typer.echo(printable(audit_markdown(a)), nl=False)
    # As `--verify` does for every run: a CI step `fleet audit RUN` passed on a record that said BROKEN.
    problems = a["chain_problems"] + [p for s in a["snapshots"] if not s.get("present") for p in s.get("problems") or
                                      [f"snapshot {s['id'][:12]} ({s['role']}) is not intact"]]
    if problems:
        _untrusted(f"run {a['record']['run_id']}", problems)
    return 0
