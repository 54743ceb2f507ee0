"""Outputs of many small files came home in silence: 50,000 of them took half a minute after
"collect: fetching outputs" with no other line (minutes over a slow link). A collect now reports files
and bytes received as staging does: a live line on a terminal, a plain line every interval otherwise."""
from __future__ import annotations

import contextlib
import io
import re
import tarfile
import threading
import time
from types import SimpleNamespace

import pytest

from fleet import stage
from fleet.run.collect import collect

FILES = 2000


class _SlowChannel:
    """A machine's tar of the outputs, arriving a little at a time as over a slow link."""

    def __init__(self, data: bytes):
        self.data = io.BytesIO(data)

    def settimeout(self, seconds):
        pass

    def exec_command(self, command):
        pass

    def recv(self, n):
        time.sleep(0.002)
        return self.data.read(min(n, 8192))

    def makefile_stderr(self, mode):
        return io.BytesIO(b"")

    def recv_exit_status(self):
        return 0

    def close(self):
        pass


def _outputs_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i in range(FILES):
            info = tarfile.TarInfo(f"./step-{i:05d}.json")
            info.size = 3
            tar.addfile(info, io.BytesIO(b"{}\n"))
    return buf.getvalue()


class _Events:
    def __init__(self, live: bool):
        self.lines: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()
        if live:                      # a terminal: progress updates one line in place
            self.plain = False
            self.progress = lambda name, detail: self._add("progress", name, detail)

    def _add(self, kind, name, detail):
        with self.lock:
            self.lines.append((kind, name, detail))

    def phase(self, name, detail=""):
        self._add("phase", name, detail)

    def warn(self, message):
        self._add("warn", "", message)

    def log(self, label, stream, line):
        pass


@pytest.mark.parametrize("live", [False, True])
def test_a_long_collect_reports_files_received_as_it_goes(tmp_path, monkeypatch, live):
    data = _outputs_tar()

    class Session:
        active = True

        def open_channel(self, **kwargs):
            return _SlowChannel(data)

    monkeypatch.setattr(stage, "connect", lambda m: contextlib.nullcontext(Session()))
    events = _Events(live)
    ctx = SimpleNamespace(hurry=threading.Event(), events=events, machines_lost=None, run_id="r1",
                          config=SimpleNamespace(outputs_max_bytes=None), run_dir=tmp_path / "run")
    machine = SimpleNamespace(id="m-0", workdir="/w", node_rank=0)
    got = collect(ctx, SimpleNamespace(machines=[machine]), interval=0.05)
    seen = len(events.lines)

    assert got.files == FILES and not got.incomplete
    assert len(list((tmp_path / "run" / "node-0").iterdir())) == FILES
    kind = "progress" if live else "phase"
    shown = [detail for k, name, detail in events.lines if k == kind and name == "collect" and "received" in detail]
    assert len(shown) >= 2, events.lines
    counts = [int(re.match(r"([\d,]+) files, ", line).group(1).replace(",", "")) for line in shown]
    assert counts == sorted(counts) and 0 < counts[-1] <= FILES and counts[0] < FILES, shown
    assert shown[0].endswith("machines: 0 of 1 done"), shown
    time.sleep(0.2)                   # the ticker stopped with the collect: nothing more comes
    assert len(events.lines) == seen
