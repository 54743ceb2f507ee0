"""What the local provider reads of a machine it did not keep a handle on: its sshd found by the
config on its command line (also once sshd retitled itself), and its deadline file, which the
machine's login may replace by anything (a FIFO must not hang `fleet status`)."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from fleet.providers.local.provider import _deadline_file
from fleet.providers.local.sshd import _runs_config


@pytest.fixture
def retitled(tmp_path):
    """A process whose whole command line is one string, as sshd's listener makes its own."""
    config = tmp_path / "m-n0" / "sshd_config"
    title = f"sshd: /usr/sbin/sshd -D -e -f {config} [listener] 0 of 10-100 startups"
    proc = subprocess.Popen([title, "300"], executable="sleep")      # argv[0] is the title, as sshd's
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and \
            not Path(f"/proc/{proc.pid}/cmdline").read_bytes().startswith(title.encode() + b"\0"):
        time.sleep(0.02)
    yield proc, config
    proc.kill()
    proc.wait()


def test_a_retitled_sshd_is_still_known_by_its_config(retitled):
    proc, config = retitled
    assert _runs_config(proc.pid, config)
    assert not _runs_config(proc.pid, config.parent.parent / "m-n1" / "sshd_config")
    assert not _runs_config(proc.pid, Path(str(config) + ".bak"))     # a word, not a prefix
    assert not _runs_config(os.getpid(), config)


def test_the_deadline_file_is_read_only_as_a_small_regular_file(tmp_path):
    state = tmp_path / "root" / ".fleet"
    state.mkdir(parents=True)
    deadline = state / "deadline"
    deadline.write_text("1900000000.5")
    assert _deadline_file(tmp_path).timestamp() == 1900000000.5
    for planted in ("nan", "inf", "1e400", "not a number", ""):
        deadline.write_text(planted)
        assert _deadline_file(tmp_path) is None
    deadline.unlink()
    os.mkfifo(deadline)                          # a writer never comes: reading it must not wait for one
    started = time.monotonic()
    assert _deadline_file(tmp_path) is None
    assert time.monotonic() - started < 2
    deadline.unlink()
    (tmp_path / "elsewhere").write_text("1900000000")
    deadline.symlink_to(tmp_path / "elsewhere")
    assert _deadline_file(tmp_path) is None
