"""The CLI's event sinks when their stream breaks (fleet/cli/render.py): a reader gone (EPIPE, EIO)
silences the streams that are not files and the run goes on; a stdout redirected to a file keeps
`--json`'s result; any other error (a full disk under `> run.log`) is raised as it was."""
from __future__ import annotations

import errno
import os
import sys

import pytest

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


def test_a_full_disk_is_not_taken_for_a_closed_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", Broken(errno.ENOSPC))
    events = render.JsonEvents()
    with pytest.raises(OSError) as raised:
        events.warn("no space")
    assert raised.value.errno == errno.ENOSPC
