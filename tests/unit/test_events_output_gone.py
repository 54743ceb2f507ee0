"""The CLI's event sinks when their stream breaks (fleet/cli/render.py): the run's events stop and
the run goes on to clean up; a reader gone (EPIPE, EIO) also silences the streams that are not
files (a stdout redirected to a file keeps `--json`'s result); another error (a full disk under
`> run.log`) leaves the streams as they are."""
from __future__ import annotations

import errno
import os
import sys

from fleet.cli import render


class Broken:
    def __init__(self, code: int):
        self.code = code
        self.read_end, self.write_end = os.pipe()

    def write(self, _text):
        raise OSError(self.code, os.strerror(self.code))

    def flush(self):
        pass

    def fileno(self):
        return self.write_end


def test_a_gone_stderr_silences_it_but_a_json_file_on_stdout_keeps_its_result(tmp_path, monkeypatch):
    out = open(tmp_path / "out.json", "w")
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", Broken(errno.EPIPE))
    events = render.JsonEvents()
    events.warn("the terminal closed")          # raised EPIPE: now silent, no exception
    events.log("0", "out", "a line")
    assert sys.stdout is out and sys.stderr is not out and sys.stderr.name == os.devnull
    render.print_json({"status": "succeeded"})
    out.close()
    assert '"succeeded"' in (tmp_path / "out.json").read_text()


def test_a_full_disk_stops_the_events_without_ending_the_run_or_hiding_the_streams(monkeypatch):
    broken = Broken(errno.ENOSPC)
    monkeypatch.setattr(sys, "stderr", broken)
    events = render.JsonEvents()
    events.warn("no space")                       # raised out of the pipeline's cleanup before
    events.phase("release", "destroying 1 machine(s)")
    assert sys.stderr is broken                   # not silenced: the command's last word may still be said
