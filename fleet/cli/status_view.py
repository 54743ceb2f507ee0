"""`fleet status`: the library's lease views, rendered. No typer here: `fleet status` is the command
people and scripts call in loops, so fleet/cli/main.py answers its plain forms without loading the
typer application (tests/unit/test_cli_catalog.py keeps both routes identical)."""
from __future__ import annotations

import sys

# The flags the typer command declares; any other argument goes through typer (help, errors).
FLAGS = {"--json": "json_out", "--all-users": "all_users", "--fast": "fast", "--refresh": "refresh"}


def fast_args(args: list[str]) -> dict[str, bool] | None:
    """`status [--json] [--all-users] [--fast] [--refresh]` as keyword arguments of show(); None otherwise."""
    if not args or args[0] != "status" or len(set(args[1:])) != len(args[1:]):
        return None
    if any(flag not in FLAGS for flag in args[1:]):
        return None
    return {name: flag in args[1:] for flag, name in FLAGS.items()}


def show(json_out: bool = False, all_users: bool = False, fast: bool = False, refresh: bool = False) -> int:
    # ~30,000 small objects at 1,000 leases, none in a cycle: the cyclic collector would walk them
    # again and again for nothing (~4 ms of ~65). On again afterwards for a caller in the same process.
    import gc
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _show(json_out, all_users, fast, refresh)
    finally:
        if was_enabled:
            gc.enable()


def _show(json_out: bool, all_users: bool, fast: bool, refresh: bool) -> int:
    from ..config.peek import peek_str
    from ..leases import status as lease_status
    from ..plan import current_user
    from ..state import open_state
    user = None if all_users else current_user(peek_str("user"))
    state = open_state()
    if not (json_out or fast or refresh):
        # The table straight from the state's rows where they serve (SQLite, no provider to ask now).
        from ..state.status_rows import table_rows
        leases = table_rows(state, user)
        if leases == []:
            print("no live leases")
            return 0
        if leases is not None:
            from ..status_table import status_from_rows
            made = status_from_rows(leases)
            if made is not None:
                return _print(*made)
    views = lease_status(state, user=user, all_users=all_users, check=not fast, refresh=refresh)
    if json_out:
        from ..render.status_json import write_leases

        def jsonable(value):   # only for what is not JSON already (lease views are, but for a provider's oddity)
            from ..models import to_jsonable
            return to_jsonable(value)
        # As render.print_json writes it (the same text), without importing rich for a listing.
        write_leases(views, sys.stdout.write, default=jsonable)
        sys.stdout.write("\n")
        return 0
    if not views:
        print("no live leases")
        return 0
    from ..status_table import status_notes, status_table
    table, notes = status_table(views), status_notes(views)
    del views               # freed before the text is made, which reuses their memory
    return _print(table, notes)


def _print(table, notes: list[str]) -> int:
    from ..render.text import print_table
    print_table(table)
    for note in notes:
        print(note)
    return 0
