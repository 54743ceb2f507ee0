"""`fleet status`: the library's lease views, rendered. No typer here: `fleet status` is the command
people and scripts call in loops, so fleet/cli/main.py answers its plain forms without loading the
typer application (tests/unit/test_cli_catalog.py keeps both routes identical)."""
from __future__ import annotations

import sys

# The flags the typer command declares; any other argument goes through typer (help, errors).
FLAGS = {"--json": "json_out", "--all-users": "all_users", "--fast": "fast"}
COLUMNS = ("lease", "provider", "template", "user", "health", "machines", "gpus", "deadline in", "runs")


def fast_args(args: list[str]) -> dict[str, bool] | None:
    """`status [--json] [--all-users] [--fast]` as keyword arguments of show(); None for anything else."""
    if not args or args[0] != "status" or len(set(args[1:])) != len(args[1:]):
        return None
    if any(flag not in FLAGS for flag in args[1:]):
        return None
    return {name: flag in args[1:] for flag, name in FLAGS.items()}


def show(json_out: bool = False, all_users: bool = False, fast: bool = False) -> int:
    from ..config.peek import peek_str
    from ..leases import status as lease_status
    from ..plan import current_user
    views = lease_status(user=None if all_users else current_user(peek_str("user")), check=not fast)
    if json_out:
        import json
        if views:
            from ..models import to_jsonable
            views = to_jsonable(views)
        # As render.print_json writes it, without importing rich for a listing.
        sys.stdout.write(json.dumps({"leases": views}, indent=2, sort_keys=True) + "\n")
        return 0
    if not views:
        print("no live leases")
        return 0
    rows, simulated = [], False
    for v in views:
        up_count = sum(1 for m in v["machines"] if m["state"] == "running")
        simulated |= any(m["simulated_gpus"] for m in v["machines"])
        runs = ", ".join(f"{r['id']} ({r['status']})" for r in v["runs"][:2])
        rows.append((v["id"], v["provider"], v["template"], v["user"], v["health"],
                     f"{up_count}/{len(v['machines'])}", str(v["gpus"]), _remaining(v["deadline"]), runs or "-"))
    from .plain_table import PLAIN_ABOVE_ROWS, plain_table
    if len(rows) > PLAIN_ABOVE_ROWS or not sys.stdout.isatty():
        # Piped, or a team's worth of leases: a plain table never cuts an id or drops a header.
        sys.stdout.write(plain_table("fleet leases", COLUMNS, rows))
    else:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table
        table = Table(title="fleet leases", title_justify="left")
        for col in COLUMNS:
            table.add_column(col, no_wrap=col in ("lease", "runs"), overflow="fold")
        for row in rows:
            table.add_row(*(escape(cell) for cell in row))
        Console().print(table)
    if simulated:
        print("local GPUs are simulated slots (CUDA_VISIBLE_DEVICES is set, no GPU is attached)")
    return 0


def _remaining(iso: str | None) -> str:
    if not iso:
        return "-"
    from ..models import parse_time, utcnow
    seconds = int((parse_time(iso) - utcnow()).total_seconds())
    if seconds <= 0:
        return "passed"
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
