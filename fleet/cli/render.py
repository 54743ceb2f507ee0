"""The CLI's output: run progress (Events) on a terminal, plain prefixed lines in CI, quiet for --json;
and where listings and JSON go (stdout). What a table or a document says is built in the library and
rendered by fleet/render; this module only chooses where it is printed."""
from __future__ import annotations

import os
import sys
import threading
import time

from rich.console import Console

PHASE_ICONS = {"lease": "⇢", "ready": "⋯", "stage": "⇡", "setup": "⚙", "run": "▶", "collect": "⇣",
               "release": "✗", "keep": "⏸"}


def is_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes") or os.environ.get("GITHUB_ACTIONS") == "true"


class RichEvents:
    """Phases as a live status line; experiment logs printed above it, prefixed by rank."""

    def __init__(self, *, stream=None, plain: bool = False):
        self.console = Console(file=stream or sys.stdout, highlight=False, soft_wrap=True,
                               force_terminal=None if not plain else False)
        self.err = Console(file=sys.stderr, highlight=False, soft_wrap=True)
        self.plain = plain or not self.console.is_terminal
        self._status = None
        self._lock = threading.RLock()
        self._t0 = time.monotonic()

    def phase(self, name: str, detail: str = "") -> None:
        from rich.markup import escape
        elapsed = time.monotonic() - self._t0
        # Commands, paths and host names are the user's: never read as rich markup ("[red]", "[[hosts]]").
        text = escape(f"[{elapsed:6.1f}s] {PHASE_ICONS.get(name, '•')} {name}: {detail}")
        with self._lock:
            if self.plain:
                print(f"fleet: {name}: {detail}", file=sys.stderr, flush=True)
                return
            if self._status is None:
                self._status = self.console.status(text, spinner="dots")
                self._status.start()
            else:
                self._status.update(text)
            self.console.print(f"[bold cyan]fleet[/] {text}", markup=True)

    def progress(self, name: str, detail: str) -> None:
        """A live line on a terminal, updated in place; plain output prints it (callers throttle)."""
        with self._lock:
            if self.plain or self._status is None:
                print(f"fleet: {name}: {detail}", file=sys.stderr, flush=True)
            else:
                from rich.markup import escape
                self._status.update(escape(f"[{time.monotonic() - self._t0:6.1f}s] {PHASE_ICONS.get(name, '•')} "
                                           f"{name}: {detail}"))

    def log(self, label: str, stream: str, line: str) -> None:
        with self._lock:
            prefix = f"[{label}]"
            if self.plain:
                out = sys.stdout if stream == "out" else sys.stderr
                out.write(f"{prefix} {line}\n")
                out.flush()
            else:
                style = None if stream == "out" else "red"
                self.console.out(f"{prefix} {line}", style=style, highlight=False)

    def warn(self, message: str) -> None:
        with self._lock:
            print(f"fleet: warning: {message}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


class JsonEvents(RichEvents):
    """--json: stdout carries only the final JSON; logs and phases go to stderr as plain lines."""

    def __init__(self):
        super().__init__(stream=sys.stderr, plain=True)

    def log(self, label: str, stream: str, line: str) -> None:
        with self._lock:
            sys.stderr.write(f"[{label}] {line}\n")
            sys.stderr.flush()


def print_json(data) -> None:
    from ..render.data import json_text
    sys.stdout.write(json_text(data))
    sys.stdout.flush()


def print_table(table) -> None:
    """A listing (a fleet.render.Table) on stdout: rich on a terminal, plain when piped or long."""
    from ..render.text import print_table as show
    show(table)
