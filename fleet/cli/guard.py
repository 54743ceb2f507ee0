"""The one place where FleetError becomes a one-line message and an exit code, without typer.

`guard(call)` is shared by the typer application (fleet/cli/errors.py adds the click exceptions)
and by the start-up fast paths in fleet/cli/main.py, so every path reports errors the same way.
"""
from __future__ import annotations

import os
import sys

TYPE_CHECKING = False   # see fleet/__init__.py: this module is on `fleet status`'s path
if TYPE_CHECKING:
    from typing import Callable


def take_debug_flag(argv: list[str]) -> bool:
    """Remove fleet's own --debug; one after `--` belongs to the experiment's command."""
    end = argv.index("--") if "--" in argv else len(argv)
    if "--debug" in argv[1:end]:
        argv.remove("--debug")
        return True
    return os.environ.get("FLEET_DEBUG") == "1"


def guard(call: Callable[[], int], debug: bool, extra: Callable[[BaseException], int | None] | None = None) -> int:
    """Run `call`; FleetError → one line and its exit code, Ctrl-C → 130, a bug → one line (--debug:
    the traceback). `extra` may translate other exceptions (click's) and returns None to decline."""
    from ..errors import ExitCode, FleetError
    try:
        return call()
    except FleetError as exc:
        if debug:
            _print_traceback()
        print(f"fleet: error: {error_line(exc.one_line())}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("fleet: cancelled", file=sys.stderr)
        return ExitCode.CANCELLED
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 — a bug: still one line unless --debug
        handled = extra(exc) if extra is not None else None
        if handled is not None:
            return handled
        if debug:
            _print_traceback()
            return 1
        if _about_a_path(exc):   # the path given is the problem, not fleet: say which and why
            print(f"fleet: error: {error_line(_failed_path(exc))}: {exc.strerror}{_space_hint(exc)}", file=sys.stderr)
            return ExitCode.ENVIRONMENT
        if isinstance(exc, OSError) and exc.errno in _NO_DESCRIPTORS:
            print(f"fleet: error: {error_line(_descriptors_line(exc))}", file=sys.stderr)
            return ExitCode.ENVIRONMENT
        if _no_space(exc):   # a full disk met while flushing a file on close names no file
            print(f"fleet: error: {error_line(_where_full(exc))}", file=sys.stderr)
            return ExitCode.ENVIRONMENT
        if isinstance(exc, RuntimeError) and "home directory" in str(exc):   # pathlib's, for ~ or ~user
            print("fleet: error: a path starts with ~ but that home directory is unknown (no such user, or "
                  "HOME unset with no passwd entry): give the path in full, or set HOME", file=sys.stderr)
            return ExitCode.ENVIRONMENT
        print(f"fleet: internal error: {type(exc).__name__}: {error_line(str(exc))} "
              "(rerun with --debug for the traceback)", file=sys.stderr)
        return 1


def _print_traceback() -> None:
    """--debug: the traceback, with any URL's password in it shown as ***."""
    import traceback
    from ..masking import without_url_passwords
    print(without_url_passwords(traceback.format_exc()), end="", file=sys.stderr)


def _about_a_path(exc: BaseException) -> bool:
    """An OSError naming a path that no program could use as given: a name too long for the filesystem
    (`-f`, `--store`, `--key`, `--runs-dir` or a snapshot PATH of 300 characters each were `internal
    error: OSError`), a symlink loop, a read-only or full filesystem, no permission, or a path of the
    wrong kind (a directory where fleet keeps a file, a file where it keeps a directory: a damaged
    store or FLEET_HOME)."""
    import errno
    return isinstance(exc, OSError) and exc.filename is not None and exc.errno in (
        errno.ENAMETOOLONG, errno.ELOOP, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM,
        errno.EISDIR, errno.ENOTDIR, errno.EEXIST)


def _writes_failed(exc: OSError) -> bool:
    import errno
    return exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def _failed_path(exc: OSError) -> str:
    """A copy or rename that could not write names both files, the one read first: a full disk is
    the destination's (a local machine's agent copied into a full FLEET_HOME named fleet's own
    agent.py, so the space was looked for in the wrong place)."""
    return str(exc.filename2 if exc.filename2 is not None and _writes_failed(exc) else exc.filename)


_NO_DESCRIPTORS = (24, 23)   # EMFILE, ENFILE (Linux and the BSDs alike)


def _descriptors_line(exc: OSError) -> str:
    """`ulimit -n 14` made `fleet up` end `internal error: OSError: [Errno 24] Too many open files`:
    a limit of this shell, not a bug. The limit is named, and how to raise it."""
    import errno
    if exc.errno == errno.ENFILE:
        return "the system's table of open files is full (ENFILE): close programs, or raise fs.file-max"
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return "too many open files for this shell's limit: raise it (`ulimit -n 1024`) and run again"
    # Four times what it is (1024 at least), within the hard limit: at the usual 1024 it was told
    # "that is its hard limit too" under a hard limit of 524288.
    to = max(1024, soft * 4) if hard == resource.RLIM_INFINITY else min(max(1024, soft * 4), hard)
    raise_it = f"raise it (`ulimit -n {to}`) and run again" if to > soft else \
        "that is its hard limit too (`ulimit -n N` sets both): run from a new shell, or raise the hard limit"
    return f"too many open files: this shell allows {soft} (`ulimit -n`); {raise_it}"


def _no_space(exc: BaseException) -> bool:
    import errno
    return isinstance(exc, OSError) and exc.filename is None and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _where_full(exc: OSError) -> str:
    """A full disk whose OSError names no file (a buffered write that failed as the file closed: a
    local machine's host key or authorized_keys in a full FLEET_HOME) was `internal error: OSError:
    [Errno 28] No space left on device`, a bug report for a full disk. The places fleet writes on
    this computer are named instead with the space left on each (only the nearly full ones, if any are)."""
    import os
    from ..render.units import human_size
    full_output = _stdout_full()
    if full_output:
        return f"{exc.strerror or 'No space left on device'} while writing standard output: {full_output}: " \
               "send it elsewhere (or free space there) and run again"
    places = [("FLEET_HOME", os.environ.get("FLEET_HOME") or os.path.join(os.path.expanduser("~"), ".fleet"))]
    try:
        places.append(("the current directory (runs/ is written under it)", os.getcwd()))
    except OSError:   # removed under the shell: FLEET_HOME alone is named
        pass
    shown = []
    for name, path in places:
        try:
            st = os.statvfs(path)
        except OSError:
            continue
        free = st.f_bavail * st.f_frsize
        shown.append((free >= _LOW_SPACE, f"{name} {path} ({human_size(free)} free)"))
    low = [text for roomy, text in shown if not roomy]
    where = "; ".join(low or [text for _, text in shown]) or "the filesystem fleet was writing to"
    return f"{exc.strerror or 'No space left on device'} while writing: {where}: free space there and run again"


def _stdout_full() -> str | None:
    """`fleet status --json > /dev/full` (or to a file on a full disk): that write names no file
    either, and FLEET_HOME and the current directory, with room to spare, were blamed for it."""
    import os
    import stat
    from ..render.units import human_size
    try:
        st = os.fstat(1)
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == os.stat("/dev/full").st_rdev:
            return "it is /dev/full"
        if stat.S_ISREG(st.st_mode):
            vfs = os.fstatvfs(1)
            free = vfs.f_bavail * vfs.f_frsize
            return f"its filesystem has {human_size(free)} free" if free < _LOW_SPACE else None
    except OSError:   # no /dev/full, or stdout closed: the places fleet writes are named instead
        return None
    return None


_LOW_SPACE = 64 * 1024 * 1024   # less than this left: that filesystem is named first, as the likely full one


def _space_hint(exc: OSError) -> str:
    import errno
    return " (free space on the filesystem that holds it)" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""


def error_line(message: str) -> str:
    """One line, its control characters visible: a message quotes what users, teammates and remote
    machines wrote (a host name, a file path, a queue reason), and a terminal obeys ESC sequences."""
    from ..masking import without_url_passwords
    from ..render.text import printable_line
    line = printable_line(without_url_passwords(message))
    if len(line) <= MAX_ERROR_LINE:
        return line
    # A refusal quotes the bad value: a 5,000-digit --budget made a 5,000-character error line that
    # buried the reason. Its start (what was refused) and end (the hint) are kept.
    head, tail = MAX_ERROR_LINE * 2 // 3, MAX_ERROR_LINE // 3
    return f"{line[:head]} …({len(line) - head - tail:,} characters left out)… {line[-tail:]}"


MAX_ERROR_LINE = 1200

