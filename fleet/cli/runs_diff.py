"""`fleet runs diff A B [--json|--md]`: what differs between two runs (code, data, environment,
parameters). Parses, calls fleet.records.rundiff, renders."""
from __future__ import annotations

import typer


def register(runs_app: typer.Typer) -> None:
    runs_app.command("diff")(diff)


def diff(a: str = typer.Argument(..., help="The first run (id or unique prefix)."),
         b: str = typer.Argument(..., help="The second run."),
         json_out: bool = typer.Option(False, "--json", help="JSON on stdout."),
         md: bool = typer.Option(False, "--md", help="Markdown on stdout.")) -> int:
    """What differs between two runs: code (commit, files), data (snapshots, files), environment
    (image, packages, driver, GPU) and parameters (command, configuration). Exit 0 either way."""
    from ..errors import UsageError
    from ..records.chain import get_record
    from ..records.rundiff import diff_runs, markdown, text_lines
    if json_out and md:
        raise UsageError("--json and --md are exclusive", hint="pick one output format")
    result = diff_runs(get_record(a), get_record(b))
    if json_out:
        from .render import print_json
        print_json(result.to_json())
    elif md:   # commands, paths and names from two records: their control characters shown, not obeyed
        from ..render.text import printable
        typer.echo(printable(markdown(result)), nl=False)
    else:
        from ..render.text import printable
        for line in text_lines(result):
            typer.echo(printable(line))
    return 0
