"""A job that leaves a FIFO (or a device) in its checkpoint directory does not hang the run's end:
the machine's side skips what is not a regular file and says so (it blocked opening the FIFO, and
the sweep sat in `collect` for ten minutes); and a second Ctrl-C cuts an upload that a machine
holds open (it waited out the channel's 600 s timeout)."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import fleet.remote.ssh as ssh
from fleet.errors import MachineUnreachable
from fleet.run import checkpoints
from fleet.snapshots import open_store
from tests.unit.test_checkpoint_hostile_machine import _machine

HELPER = Path(checkpoints.__file__).resolve().parent.parent / "remote" / "checkpoint_helper.py"


def test_a_fifo_in_the_checkpoint_directory_is_skipped_with_a_line_and_the_rest_uploads(tmp_path):
    ckpt = tmp_path / "ckpt"
    (ckpt / "sub").mkdir(parents=True)
    (ckpt / "sub" / "model.pt").write_bytes(b"weights" * 1000)
    os.mkfifo(ckpt / "pipe")
    os.symlink("/dev/zero", ckpt / "zeros")          # a link is recorded as a link, never read
    done = subprocess.run([sys.executable, str(HELPER), str(ckpt)], input=b'{"want": []}\n',
                          capture_output=True, timeout=20)
    assert done.returncode == 0, done.stderr
    listing = json.loads(done.stdout.splitlines()[0])
    files = {e["path"]: e["type"] for e in listing["entries"]}
    assert files == {"sub": "dir", "sub/model.pt": "file", "zeros": "symlink"}
    assert b"pipe not checkpointed: not a regular file" in done.stderr


class Silent(io.RawIOBase):
    """A machine that answers nothing until its channel is closed."""

    def __init__(self, closed: threading.Event):
        self.closed_event = closed

    def readable(self):
        return True

    def readinto(self, buf):
        self.closed_event.wait(30)
        raise OSError("channel closed")


def test_a_second_ctrl_c_cuts_an_upload_the_machine_holds_open(monkeypatch, tmp_path):
    closed = threading.Event()

    class Channel:
        @property
        def closed(self):
            return closed.is_set()

        def close(self):
            closed.set()

        def settimeout(self, t):
            pass

        def exec_command(self, command):
            pass

        def makefile(self, mode):
            return io.BufferedReader(Silent(closed))

        def makefile_stdin(self, mode):
            return io.BytesIO()

        def makefile_stderr(self, mode):
            return io.BytesIO()

    class Session:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def open_channel(self, **kw):
            return Channel()
    monkeypatch.setattr(ssh, "connect", lambda machine, **kw: Session())
    hurry = threading.Event()
    threading.Timer(0.5, hurry.set).start()
    started = time.monotonic()
    with pytest.raises(MachineUnreachable, match="checkpoint upload from m-0"):
        checkpoints.upload(_machine(), open_store(str(tmp_path / "store")), "r-1", hurry=hurry)
    assert time.monotonic() - started < 5
