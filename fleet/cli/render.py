"""The CLI's output: run progress (Events) on a terminal, plain prefixed lines in CI, quiet for --json;
and where listings and JSON go (stdout). What a table or a document says is built in the library and
rendered by fleet/render; this module only chooses where it is printed."""
from __future__ import annotations

import errno
import functools
import os
import stat
import sys
import threading
import time

from rich.console import Console

PHASE_ICONS = {"lease": "⇢", "ready": "⋯", "stage": "⇡", "setup": "⚙", "run": "▶", "collect": "⇣",
               "release": "✗", "keep": "⏸"}


def is_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes") or os.environ.get("GITHUB_ACTIONS") == "true"


class LiveLine:
    """The status line's text, made again at every refresh so its timer ticks (it showed when the
    phase began, frozen: issue 17). Rich renders it as plain text: the command, paths and host names
    in it are the user's, never markup ("[red]", "[[hosts]]")."""

    def __init__(self, t0: float, clock=time.monotonic):
        self.t0, self.clock, self.name, self.detail = t0, clock, "", ""

    def text(self) -> str:
        return f"[{self.clock() - self.t0:6.1f}s] {PHASE_ICONS.get(self.name, '•')} {self.name}: {self.detail}"

    def __rich__(self):
        from rich.text import Text
        return Text(self.text())


def _unless_output_gone(method):
    """Output that cannot be written must not end the run there: a closed terminal (EIO), a reader
    gone from the pipe (`| head`, `| tee` on Ctrl-C: EPIPE), a full disk under `> run.log` raised
    out of the pipeline's cleanup, and the machines were neither collected, released nor recorded.
    The run's events stop and it cleans up; a reader gone also silences the streams, and any other
    error is left for the command's last word (its summary, or guard's one line) to meet."""
    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        if self._output_gone:
            return None
        try:
            return method(self, *args, **kwargs)
        except OSError as exc:
            self._output_gone = True
            if exc.errno in _READER_GONE:
                silence_std_streams()
            return None
    return guarded


_READER_GONE = (errno.EPIPE, errno.EIO, errno.ENXIO, errno.EBADF)


def silence_std_streams() -> None:
    """stdout and stderr to /dev/null from here on (their reader is gone), except one that is a
    regular file (`fleet up --json > out.json` from a terminal that closed keeps its result)."""
    devnull = open(os.devnull, "w")
    for name in ("stdout", "stderr"):
        try:
            if stat.S_ISREG(os.fstat(getattr(sys, name).fileno()).st_mode):
                continue
        except (OSError, ValueError, AttributeError):
            pass
        setattr(sys, name, devnull)


class RichEvents:
    """Phases as a live status line; experiment logs printed above it, prefixed by rank."""

    _output_gone = False

    def __init__(self, *, stream=None, plain: bool = False, clock=time.monotonic):
        self.console = Console(file=stream or sys.stdout, highlight=False, soft_wrap=True,
                               force_terminal=None if not plain else False)
        self.err = Console(file=sys.stderr, highlight=False, soft_wrap=True)
        self.plain = plain or not self.console.is_terminal
        self._status = None
        self._lock = threading.RLock()
        self._t0 = clock()
        self._line = LiveLine(self._t0, clock)

    @_unless_output_gone
    def phase(self, name: str, detail: str = "") -> None:
        from rich.markup import escape
        detail = _shown(detail)
        with self._lock:
            if self.plain:
                print(f"fleet: {name}: {detail}", file=sys.stderr, flush=True)
                return
            self._line.name, self._line.detail = name, detail
            if self._status is None:
                self._status = self.console.status(self._line, spinner="dots")
                self._status.start()
            # The line printed above the live one keeps when the phase began.
            self.console.print(f"[bold cyan]fleet[/] {escape(self._line.text())}", markup=True)

    @_unless_output_gone
    def progress(self, name: str, detail: str) -> None:
        """A live line on a terminal, updated in place; plain output prints it (callers throttle)."""
        detail = _shown(detail)
        with self._lock:
            if self.plain or self._status is None:
                print(f"fleet: {name}: {detail}", file=sys.stderr, flush=True)
            else:
                self._line.name, self._line.detail = name, detail

    @_unless_output_gone
    def log(self, label: str, stream: str, line: str) -> None:
        from ..render.text import last_redraw, terminal_line
        with self._lock:
            prefix = f"[{label}]"
            if self.plain:
                line = terminal_line(last_redraw(line))
                out = sys.stdout if stream == "out" else sys.stderr
                out.write(f"{prefix} {line}\n")
                out.flush()
            else:
                style = None if stream == "out" else "red"
                self.console.out(f"{prefix} {terminal_line(line)}", style=style, highlight=False)

    @_unless_output_gone
    def warn(self, message: str) -> None:
        with self._lock:
            print(f"fleet: warning: {_shown(message)}", file=sys.stderr, flush=True)

    @_unless_output_gone
    def close(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


def _shown(text: str) -> str:
    """fleet's own lines quote names, reasons and remote answers: their control characters are shown,
    not obeyed by the terminal. (The experiment's log lines keep their colours: terminal_line.) A URL's
    password in a warning (an exception quoting a store or source URL) is shown as ***, as in error lines."""
    from ..render.text import printable_line
    from ..masking import without_url_passwords
    return printable_line(without_url_passwords(text))


class JsonEvents(RichEvents):
    """--json: stdout carries only the final JSON; logs and phases go to stderr as plain lines."""

    def __init__(self):
        super().__init__(stream=sys.stderr, plain=True)

    @_unless_output_gone
    def log(self, label: str, stream: str, line: str) -> None:
        from ..render.text import last_redraw, terminal_line
        with self._lock:
            sys.stderr.write(f"[{label}] {terminal_line(last_redraw(line))}\n")
            sys.stderr.flush()


def print_json(data) -> None:
    from ..render.data import json_text
    sys.stdout.write(json_text(data))
    sys.stdout.flush()


def print_json_list(key: str, items, after=dict) -> None:
    """print_json({key: [*items], **after()}), each item written as it comes (render.data.json_list_chunks)."""
    from ..render.data import json_list_chunks
    for chunk in json_list_chunks(key, items, after):
        sys.stdout.write(chunk)
    sys.stdout.flush()


def print_table(table) -> None:
    """A listing (a fleet.render.Table) on stdout: rich on a terminal, plain when piped or long."""
    from ..render.text import print_table as show
    show(table)
