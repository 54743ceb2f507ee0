"""Errors of the typer application: click's usage errors, help and aborts, on top of guard.guard."""
from __future__ import annotations

import re
import sys

# typer (0.12+) adds "Did you mean 'x'?" to a subgroup's unknown command, and click 8.4+ adds the same
# sentence itself (`fleet hosts list`): say it once.
_REPEATED_HINT = re.compile(r"( Did you mean [^?]*\?)(?:\1)+")

try:  # typer >= 0.2x vendors click as typer._click and raises its own exception classes
    from typer import Abort as _Abort, Exit as _Exit
    from typer._click.exceptions import ClickException as _ClickException
except ImportError:  # older typer re-exports plain click's
    from click.exceptions import Abort as _Abort, ClickException as _ClickException, Exit as _Exit
try:
    from click.exceptions import NoArgsIsHelpError as _NoArgsIsHelp
except ImportError:  # click < 8.2 prints the help itself and raises nothing
    class _NoArgsIsHelp(Exception):
        pass


def main_guard(app) -> int:
    from ..errors import ExitCode
    from .guard import guard, take_debug_flag
    debug = take_debug_flag(sys.argv)

    def call() -> int:
        try:
            result = app(standalone_mode=False)
        except SystemExit as exc:
            # click answers EPIPE (the reader of a pipe went away) with exit 1 after wrapping stdout;
            # the fast paths (`fleet status`) end 0 then: one answer for every command.
            if exc.code == 1 and type(sys.stdout).__name__.endswith("PacifyFlushWrapper"):
                return 0
            raise
        return int(result or 0) if isinstance(result, int) else 0

    def click_exceptions(exc: BaseException) -> int | None:
        if isinstance(exc, _Exit):
            return exc.exit_code
        if isinstance(exc, _Abort):
            print("fleet: cancelled", file=sys.stderr)
            return ExitCode.CANCELLED
        if isinstance(exc, _NoArgsIsHelp):
            # `fleet hosts` alone: the group's help, as a request for help rather than an error.
            ctx = getattr(exc, "ctx", None)
            print(ctx.get_help() if ctx is not None else exc.format_message())
            return 0
        if isinstance(exc, _ClickException):
            msg = _REPEATED_HINT.sub(r"\1", exc.format_message().strip().replace("\n", " "))
            ctx = getattr(exc, "ctx", None)
            where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            if msg:  # empty for `fleet` with no arguments: the help was already shown
                from .guard import error_line   # the message quotes the argument as typed: ESC and all
                print(f"fleet: error: {error_line(msg)}{where}", file=sys.stderr)
            return ExitCode.USAGE
        return None

    return guard(call, debug, click_exceptions)
