"""Ctrl-C / SIGTERM / SIGHUP during a run: the first asks it to stop gracefully (the execute loop
sends SIGTERM, waits the grace period, then collects and releases); the second skips the graceful
waits. Release still happens either way. Where no second signal comes (GitLab CI: one SIGTERM, then
SIGKILL), `ctx.stop_limit_s` after a SIGTERM hurries the run as a second signal would. A detached
run's supervisor ignores SIGHUP: it has no terminal, and the ssh session or shell it was started
from ending must not end the run.
"""
from __future__ import annotations

import signal
import threading
import time
from typing import Any

from .context import RunContext


class BetweenAttempts:
    """While recovery is between two attempts (no run, so no StopSignals): a stop signal sets
    `asked` (recovery then ends) instead of killing the process half-way (SIGTERM's default) or
    raising anywhere (SIGINT's). Main thread only; elsewhere it does nothing."""

    def __init__(self, asked: threading.Event):
        self.asked = asked
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> "BetweenAttempts":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, lambda *_: self.asked.set())
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


class StopSignals:
    """Installed for the duration of a run (main thread only). In a daemon thread, which Python does
    not wait for at exit, the program's exit stops the run instead: an exit hook asks it to stop and
    waits for its collect and release, as Ctrl-C would; without it the run was frozen mid-way at
    interpreter shutdown, its machines left up until their deadline and the run `running`."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.previous: dict[int, Any] = {}
        self.ended: threading.Event | None = None
        # The stop limit's timer: a thread that the first SIGTERM wakes (a handler must not start
        # one: the main thread may hold threading's own locks when the signal lands).
        self.limit: threading.Thread | None = None
        self.wake, self.closed = threading.Event(), threading.Event()
        self.sigterm_at = 0.0

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            detached = bool(getattr(self.ctx.options, "detached", False))
            for sig in (signal.SIGINT, signal.SIGTERM) + (() if detached else (signal.SIGHUP,)):
                self.previous[sig] = signal.signal(sig, self._handle)
            if self.ctx.stop_limit_s is not None:
                self.limit = threading.Thread(target=self._hurry_at_limit, name="stop-limit", daemon=True)
                self.limit.start()
        elif threading.current_thread().daemon:
            import atexit
            self.ended = threading.Event()
            atexit.register(self._at_exit)
        asked = getattr(self.ctx.options, "stop_asked", None)
        if asked is not None and asked.is_set():     # it came before these handlers could take it
            self.ctx.request_stop("cancelled", "a stop signal arrived before the run started")
        return self

    def _handle(self, signum, _frame) -> None:
        # Only flags here: the main thread may hold an output lock when the signal lands, so any
        # printing from the handler could deadlock. The run loop reports what happened.
        asked = getattr(self.ctx.options, "stop_asked", None)
        if asked is not None:
            asked.set()
        if self.ctx.cancel.is_set():
            self.ctx.hurry.set()
            return
        if signum == signal.SIGTERM and self.limit is not None:
            self.sigterm_at = time.monotonic()
            self.wake.set()
        self.ctx.request_stop("cancelled", f"received {signal.Signals(signum).name}")

    def _hurry_at_limit(self) -> None:
        self.wake.wait()
        if self.closed.is_set():
            return
        limit = self.ctx.stop_limit_s
        if self.closed.wait(max(0.0, self.sigterm_at + limit - time.monotonic())) or self.ctx.hurry.is_set():
            return
        self.ctx.events.warn(f"{limit:g}s since SIGTERM (FLEET_STOP_LIMIT): outputs not yet fetched are left, "
                             "and the machines released before the runner's SIGKILL")
        self.ctx.hurry.set()

    def _at_exit(self) -> None:
        # atexit hooks run before daemon threads are frozen: this one's run can still end cleanly
        self.ctx.request_stop("cancelled", "the program exited while its daemon thread ran")
        if self.ended is not None:
            self.ended.wait()

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        if self.limit is not None:
            self.closed.set()
            self.wake.set()
            self.limit.join(5)
        if self.ended is not None:
            import atexit
            atexit.unregister(self._at_exit)
            self.ended.set()
