"""The `fleet` command. Thin: parse, call the library, render.

Start-up is a feature: `fleet --help` is answered from the command table (fleet/cli/catalog.py),
the plain forms of `fleet status` by fleet/cli/status_view.py and of `fleet snapshot create` by
fleet/cli/snapshot_create.py, all without importing typer; any
other command imports typer plus the one module that registers it. The library (and boto3, paramiko, pulumi) is imported inside each command.
"""
from __future__ import annotations

import sys

from . import catalog


def run() -> None:
    try:
        _run()
    except KeyboardInterrupt:   # Ctrl-C before a command's own handling (imports, start-up checks)
        print("fleet: cancelled", file=sys.stderr)
        sys.exit(130)


def _run() -> None:
    args = sys.argv[1:]
    if sys.stdout is None:     # `>&-`: every listing would fail, or print nothing and exit 0
        print("fleet: error: standard output is closed (send it to /dev/null to discard it)", file=sys.stderr)
        sys.exit(2)
    _absolute_fleet_home()
    if catalog.wants_root_help(args) and not catalog.completing():
        try:
            sys.stdout.write(catalog.root_help())
            sys.stdout.flush()
        except BrokenPipeError:    # `fleet --help | head -1`: the reader has all it wanted
            import os
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    if not catalog.completing():
        _reconcile_detached_runs()
        _settle_kept_leases()
    from .status_view import fast_args
    status = None if catalog.completing() else fast_args([a for a in args if a != "--debug"])
    if status is not None:
        # `fleet status` is called in loops by people and scripts: its plain forms skip typer.
        from .guard import guard, take_debug_flag
        from .status_view import show
        sys.exit(guard(lambda: show(**status), take_debug_flag(sys.argv)))
    from .snapshot_create import fast_args as snapshot_args
    snapshot = None if catalog.completing() else snapshot_args([a for a in args if a != "--debug"])
    if snapshot is not None:
        # An unchanged tree's re-snapshot takes less time than importing typer: its plain forms skip it.
        from .guard import guard, take_debug_flag
        from .snapshot_create import create
        sys.exit(guard(lambda: create(**snapshot), take_debug_flag(sys.argv)))
    from .errors import main_guard
    sys.exit(main_guard(get_app()))


def _absolute_fleet_home() -> None:
    """A relative FLEET_HOME would name another directory in every process that starts elsewhere
    (a machine's sshd reads its config from there; a detached supervisor runs in the project): it
    is made absolute once, here, for this process and all it starts."""
    import os
    home = os.environ.get("FLEET_HOME")
    # ~user of no user stays as given: fleet_home() refuses it in one line (made absolute, it was a
    # directory named "~user" in the current directory).
    if home and not os.path.isabs(os.path.expanduser(home)) and not os.path.expanduser(home).startswith("~"):
        os.environ["FLEET_HOME"] = os.path.abspath(os.path.expanduser(home))


def _reconcile_detached_runs() -> None:
    """A detached run whose supervisor died is released, billed and recorded by whichever `fleet`
    command runs next (checking costs a few reads of /proc; nothing more unless one died)."""
    from ..detached_check import needs_reconcile
    if not needs_reconcile():
        return
    try:
        from ..run.detach import reconcile
        from .render import RichEvents
        reconcile(RichEvents(plain=True))
    except Exception as exc:  # noqa: BLE001 — the command the user typed still runs
        print(f"fleet: warning: could not reconcile detached runs: {exc}", file=sys.stderr)


def _settle_kept_leases() -> None:
    """A kept lease whose deadline passed with nobody running `fleet down` is billed up to that
    deadline by whichever `fleet` command runs next (checking lists one small folder)."""
    from ..kept_check import kept_lease_due
    if not kept_lease_due():
        return
    try:
        from ..models import utcnow
        from ..money.kept import settle_due
        settle_due(utcnow())
    except Exception as exc:  # noqa: BLE001 — the command the user typed still runs
        print(f"fleet: warning: could not bill the kept time of expired leases: {exc}", file=sys.stderr)


_app = None


def get_app():
    """The typer application, built on first use: importing this module costs nothing."""
    global _app
    if _app is None:
        from .app import build_app
        _app = build_app()
    return _app


def __getattr__(name: str):
    if name == "app":   # `from fleet.cli.main import app`, as tests and embedders write it
        return get_app()
    raise AttributeError(name)


if __name__ == "__main__":
    run()
