"""`fleet status`: the library's lease views, rendered. No typer here: `fleet status` is the command
people and scripts call in loops, so fleet/cli/main.py answers its plain forms without loading the
typer application (tests/unit/test_cli_catalog.py keeps both routes identical)."""
from __future__ import annotations

import sys

# The flags the typer command declares; any other argument goes through typer (help, errors).
FLAGS = {"--json": "json_out", "--all-users": "all_users", "--fast": "fast"}


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

        def jsonable(value):   # only for what is not JSON already (lease views are, but for a provider's oddity)
            from ..models import to_jsonable
            return to_jsonable(value)
        # As render.print_json writes it, without importing rich for a listing.
        sys.stdout.write(json.dumps({"leases": views}, indent=2, sort_keys=True, default=jsonable) + "\n")
        return 0
    if not views:
        print("no live leases")
        return 0
    from ..status_table import status_notes, status_table
    from ..render.text import print_table
    print_table(status_table(views))
    for note in status_notes(views):
        print(note)
    return 0
