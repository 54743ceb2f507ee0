"""`fleet runs compare RUN… | --sweep ID`: runs side by side, best first."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def register(runs_app: typer.Typer) -> None:
    runs_app.command("compare")(compare_command)


def compare_command(
    runs: Optional[List[str]] = typer.Argument(None, help="Run ids (or unique prefixes)."),
    sweep: Optional[str] = typer.Option(None, "--sweep", help="A sweep id: its trials that ran."),
    sort: Optional[str] = typer.Option(None, "--sort", help="Metric to order by (default: the first one)."),
    ascending: bool = typer.Option(False, "--ascending", help="Lowest first (e.g. for a loss)."),
    fmt: str = typer.Option("table", "--format", help="table | csv | json | md | html"),
    json_out: bool = typer.Option(False, "--json", help="Same as --format json."),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="Where sweeps write (default ./runs)."),
) -> int:
    """Compare runs: parameters, code, data, cost, GPU-hours and metrics (metrics.json), best first."""
    import sys
    from ..errors import UsageError
    from ..report.compare import compare
    from ..report.compare_render import FORMATS, RENDER
    from ..state import open_state
    if json_out and fmt.lower() not in ("table", "json"):   # two answers asked for: neither is guessed
        raise UsageError(f"--json and --format {fmt} ask for two formats", hint="give one of them")
    fmt = "json" if json_out else fmt
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    state = open_state()
    try:
        result = compare(list(runs or []), state=state, sweep_dir=runs_dir / sweep if sweep else None, sort=sort,
                         ascending=ascending)
    finally:
        state.close()
    text = RENDER[fmt](result)
    if fmt in ("table", "md"):   # for a terminal: commands and parameters shown, not obeyed (csv/json/html keep data)
        from ..render.text import printable
        text = printable(text)
    sys.stdout.write(text)
    return 0
