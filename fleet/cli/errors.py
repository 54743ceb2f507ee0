"""The one place where FleetError becomes a one-line message and an exit code."""
from __future__ import annotations

import os
import sys

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


def _take_debug_flag(argv: list[str]) -> bool:
    """Remove fleet's own --debug; one after `--` belongs to the experiment's command."""
    end = argv.index("--") if "--" in argv else len(argv)
    if "--debug" in argv[1:end]:
        argv.remove("--debug")
        return True
    return os.environ.get("FLEET_DEBUG") == "1"


def main_guard(app) -> int:
    from ..errors import ExitCode, FleetError
    debug = _take_debug_flag(sys.argv)
    try:
        result = app(standalone_mode=False)
        return int(result or 0) if isinstance(result, int) else 0
    except FleetError as exc:
        if debug:
            import traceback
            traceback.print_exc()
        print(f"fleet: error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except _Exit as exc:
        return exc.exit_code
    except _Abort:
        print("fleet: cancelled", file=sys.stderr)
        return ExitCode.CANCELLED
    except _NoArgsIsHelp as exc:
        # `fleet hosts` alone: the group's help, as a request for help rather than an error.
        ctx = getattr(exc, "ctx", None)
        print(ctx.get_help() if ctx is not None else exc.format_message())
        return 0
    except _ClickException as exc:
        msg = exc.format_message().strip().replace("\n", " ")
        ctx = getattr(exc, "ctx", None)
        where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        if msg:  # empty for `fleet` with no arguments: the help was already shown
            print(f"fleet: error: {msg}{where}", file=sys.stderr)
        return ExitCode.USAGE
    except KeyboardInterrupt:
        print("fleet: cancelled", file=sys.stderr)
        return ExitCode.CANCELLED
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug: still one line unless --debug
        if debug:
            raise
        print(f"fleet: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1
