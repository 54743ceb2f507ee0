"""The live status line of `fleet up` on a terminal: its timer ticks while a phase lasts (issue 17:
it showed `[  2.7s]`, when the phase began, and never moved)."""
from __future__ import annotations

import io
import re
import time

from rich.console import Console

from fleet.cli.render import RichEvents


def _seen(buf: io.StringIO) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buf.getvalue())   # what the terminal shows, uncoloured


def _wait_for(buf: io.StringIO, text: str, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s          # rich refreshes ~12 times a second, in its thread
    while time.monotonic() < deadline:
        if text in _seen(buf):
            return True
        time.sleep(0.05)
    return False


def test_the_live_line_ticks_while_a_phase_lasts_and_the_printed_line_keeps_its_start():
    now = [100.0]
    buf = io.StringIO()
    events = RichEvents(stream=buf, clock=lambda: now[0])
    events.console, events.plain = Console(file=buf, force_terminal=True, width=200), False
    try:
        now[0] = 102.7
        events.phase("run", "python train.py [red]")
        now[0] = 165.0                               # a minute into the phase, no new event
        assert _wait_for(buf, "[  65.0s] ▶ run: python train.py [red]"), buf.getvalue()[-400:]
        events.progress("stage", "3 of 8 MiB")
        now[0] = 170.5
        assert _wait_for(buf, "[  70.5s] ⇡ stage: 3 of 8 MiB"), buf.getvalue()[-400:]
    finally:
        events.close()
    assert "fleet [   2.7s] ▶ run: python train.py [red]" in _seen(buf)   # printed once, at its start
