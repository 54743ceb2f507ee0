"""The progress line staging and collecting share: plain phase lines where the events offer no live
line, the live line where they do, and a sink that fails ends only the ticking."""
from __future__ import annotations

import time

from fleet.snapshots.sync_progress import start_ticker


class _Progress:
    def __init__(self):
        self.calls = 0

    def line(self) -> str:
        self.calls += 1
        return f"{self.calls} files"


class _PlainEvents:
    def __init__(self, fail: bool = False):
        self.lines: list[tuple[str, str]] = []
        self.fail = fail

    def phase(self, name: str, text: str) -> None:
        if self.fail:
            raise BrokenPipeError("the terminal went away")
        self.lines.append((name, text))


class _LiveEvents(_PlainEvents):
    plain = False

    def progress(self, name: str, text: str) -> None:
        self.lines.append((f"live:{name}", text))


def _tick(events, progress, seconds=0.3):
    ticker = start_ticker(events, "collect", progress, interval=0.02)
    time.sleep(seconds)
    ticker.stop.set()
    ticker.join(5)
    return ticker


def test_plain_events_get_phase_lines_and_live_events_the_live_line():
    plain, live = _PlainEvents(), _LiveEvents()
    _tick(plain, _Progress())
    _tick(live, _Progress())
    assert len(plain.lines) >= 3 and plain.lines[0] == ("collect", "1 files"), plain.lines
    assert len(live.lines) >= 3 and all(name == "live:collect" for name, _ in live.lines), live.lines


def test_a_failing_sink_ends_only_the_ticking():
    progress = _Progress()
    ticker = _tick(_PlainEvents(fail=True), progress)
    assert progress.calls == 1 and not ticker.is_alive()
