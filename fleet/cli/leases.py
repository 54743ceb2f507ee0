"""`fleet status`, `down`, `extend`, `logs`, `ssh`."""
from __future__ import annotations

from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    app.command()(status)
    app.command()(down)
    app.command()(extend)
    app.command()(logs)
    app.command()(ssh)


def status(
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
    all_users: bool = typer.Option(False, "--all-users", help="Show every user's leases (team mode)."),
    fast: bool = typer.Option(False, "--fast", help="Do not ask providers whether machines are still up."),
    refresh: bool = typer.Option(False, "--refresh", help="Ask every provider now, instead of showing what "
                                 "AWS said within the last minute."),
) -> int:
    """List live leases with their machines, GPUs, deadlines and runs."""
    from .status_view import show
    return show(json_out=json_out, all_users=all_users, fast=fast, refresh=refresh)


def down(
    leases: Optional[List[str]] = typer.Argument(None, help="Lease ids to release."),
    all_leases: bool = typer.Option(False, "--all", help="Release every live lease of yours and sweep orphan "
                                    "machines."),
    all_users: bool = typer.Option(False, "--all-users", help="With --all: every user's leases (team mode)."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> int:
    """Destroy the machines of leases (idempotent)."""
    from ..config.peek import peek_str
    from ..errors import UsageError
    from ..leases import down as release
    from ..plan import current_user
    from .render import RichEvents
    if all_users and not all_leases:
        raise UsageError("--all-users goes with --all", hint="fleet down --all --all-users")
    if all_leases:
        _refuse_unread_team_state()
    events = RichEvents(plain=True)
    # As `fleet status` lists them: on a team's shared state, --all is the caller's own leases.
    user = None if all_users else current_user(peek_str("user"))
    released = release(list(leases or []), all_leases=all_leases, all_users=all_users, events=events, user=user)
    if json_out:
        from .render import print_json
        print_json({"released": released})
    else:
        typer.echo(f"released {len(released)}: {', '.join(released)}" if released else "nothing to release")
    return 0


def _refuse_unread_team_state() -> None:
    """`down --all` releases every lease of a state: with a ./fleet.toml that cannot be read (a link to
    an unmounted team share, a syntax error mid-edit), the state_url it sets is unknown, and releasing
    FLEET_HOME's leases instead is destruction nobody asked for. status and runs ls only warn."""
    import os

    from ..config.peek import peek_why
    from ..errors import UsageError
    if os.environ.get("FLEET_STATE_URL"):
        return   # named outright: the file's state_url would not count anyway
    _value, why = peek_why("state_url")
    if why is not None:
        raise UsageError(f"./fleet.toml: {why}: `fleet down --all` would release the leases of FLEET_HOME's "
                         "state, which may not be your team's", hint="fix or remove ./fleet.toml, or name the "
                         "leases: fleet down LEASE")


def extend(
    lease: str = typer.Argument(..., help="Lease id."),
    duration: str = typer.Argument(..., help="How much longer from now, e.g. 30m (never past max_duration)."),
) -> int:
    """Move a kept lease's deadline (on every machine) to now + DURATION."""
    from ..leases import extend as extend_lease
    from ..models import to_jsonable
    from .up import flag_duration
    seconds = flag_duration("DURATION", duration)
    config = _config_here()
    limits = None
    if config is not None:
        from ..money.metering import BudgetLimits
        limits = BudgetLimits.from_config(config)
    extension = extend_lease(lease, seconds, user=config.user if config else None, limits=limits)
    typer.echo(f"lease {lease} now ends at {to_jsonable(extension.until)}")
    if extension.capped_by:
        typer.echo(f"fleet: warning: lease {lease} is kept {extension.describe()}", err=True)
    return 0


def _config_here():
    """./fleet.toml, read once for both what extend needs of it: `user =` (who `fleet up` said you
    are) and [budgets] (which cap a kept lease's extension). None without one; a broken one is
    refused: extending past a budget because its file did not parse is no answer."""
    import os
    if not os.path.lexists("fleet.toml"):     # one there but unreadable (a dangling link) is refused by the load
        return None
    from ..config.loader import load_config
    return load_config(None, overrides={"command": ["true"]})


def logs(
    run: str = typer.Argument(..., help="Run id (see `fleet runs ls` or `fleet status`)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the run ends."),
) -> int:
    """Print a run's logs, prefixed by rank."""
    from ..render.text import terminal_line
    from ..run_logs import follow_logs
    for line in follow_logs(run, follow=follow):
        typer.echo(terminal_line(line))
    return 0


def ssh(
    lease: str = typer.Argument(..., help="Lease id."),
    node: int = typer.Argument(0, help="Node rank."),
    command: Optional[List[str]] = typer.Argument(None, help="Command to run (after --)."),
    print_only: bool = typer.Option(False, "--print", help="Print the ssh command instead of running it."),
) -> int:
    """Open a shell (or run a command) on a machine of a lease, with its pinned host key."""
    import shlex
    from ..leases import exec_ssh, ssh_argv
    argv = ssh_argv(lease, node, list(command or []))
    if print_only:
        typer.echo(shlex.join(argv))
        return 0
    exec_ssh(argv)
    return 0
