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


def _retitled(tmp_path, binary: str):
    """A process whose whole command line is one string, as sshd's listener makes its own, running a
    copy of `sleep` named `binary`."""
    import shutil
    config = tmp_path / "m-n0" / "sshd_config"
    title = f"sshd: /usr/sbin/sshd -D -e -f {config} [listener] 0 of 10-100 startups"
    exe = tmp_path / binary
    shutil.copy(shutil.which("sleep"), exe)
    proc = subprocess.Popen([title, "300"], executable=str(exe))      # argv[0] is the title, as sshd's
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and \
            not Path(f"/proc/{proc.pid}/cmdline").read_bytes().startswith(title.encode() + b"\0"):
        time.sleep(0.02)
    return proc, config


@pytest.fixture
def retitled(tmp_path):
    proc, config = _retitled(tmp_path, "sshd")
    yield proc, config
    proc.kill()
    proc.wait()


def test_a_process_that_only_names_the_config_is_not_the_machines_sshd(tmp_path):
    """A red-team finding: the login wrote the pid of its own `tail -f …/sshd.log` (any process
    naming a file beside the pid file) into sshd.pid, and `fleet down` ended it and its children."""
    proc, config = _retitled(tmp_path, "tail")
    try:
        assert not _runs_config(proc.pid, config)
        from fleet.remote.agent.agent_args import names_a_file_beside
        assert not names_a_file_beside(proc.pid, str(config.parent / "sshd.pid"))
    finally:
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


def test_a_recorded_sshd_pid_that_another_process_reused_is_not_running(tmp_path):
    """`fleet status` compared only the pid in sshd.pid, not its start time: a dead sshd whose pid a
    new process took showed as running."""
    from fleet.providers.local.liveness import machine_state
    d = tmp_path / "m-n0"
    d.mkdir()
    (d / "sshd.pid").write_text(f"{os.getpid()} 1\n")          # this process, but not started at tick 1
    assert machine_state({"dir": str(d), "sshd_pid": os.getpid()}) == ("gone", "sshd not running")


def test_a_link_in_the_machines_directory_is_never_swept(tmp_path, fleet_home):
    """A link planted in one FLEET_HOME's machines/ to another's machine had `fleet reap` end it."""
    from fleet.paths import subdir
    from fleet.providers.local.provider import LocalProvider
    elsewhere = tmp_path / "other-home" / "machines" / "l-0a1b2c3d-n0"
    elsewhere.mkdir(parents=True)
    (subdir("machines") / "l-0a1b2c3d-n0").symlink_to(elsewhere)
    assert LocalProvider().orphan_dirs(set()) == []
    assert elsewhere.is_dir()
