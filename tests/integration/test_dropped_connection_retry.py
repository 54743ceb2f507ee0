"""A machine's pooled SSH connection that drops under a sweep's reset between trials or under an
outputs transfer, against real sshd machines. Both only end, remove or read what one trial left, so
each is run once more on a fresh connection instead of failing: a full-suite run under load saw one
drop fail two trials' resets and a third trial's outputs ("tar on the machine exited -1") at once,
and the sweep exit 1 although every trial had succeeded."""
from __future__ import annotations

import signal
from pathlib import Path

import paramiko
import pytest

from fleet.errors import MachineUnreachable
from fleet.remote.pool import SessionPool
from fleet.remote.ssh import connect, wait_ready
from fleet.stage import fetch_directory
from fleet.sweep.reset import reset_machine
from tests.conftest import wait_until
from tests.fixtures.slurm import signal_all
from tests.integration.test_session_pool import _sshd_sessions


def _drop_before(monkeypatch, machine, marker: str, times: int = 1) -> list[str]:
    """The first `times` commands holding `marker` find their connection gone: every sshd process
    serving the machine's connections is killed as the command is about to be sent (its listener,
    and so new connections, live on). Returns the commands that met a dropped connection."""
    listener = int((Path(machine.workdir).parent / "sshd.pid").read_text().split()[0])
    real = paramiko.Channel.exec_command
    dropped: list[str] = []

    def exec_command(chan, command):
        if marker in command and len(dropped) < times:
            dropped.append(command)
            signal_all(_sshd_sessions(listener), signal.SIGKILL)
            assert wait_until(lambda: not chan.get_transport().is_active(), 10)
        return real(chan, command)

    monkeypatch.setattr(paramiko.Channel, "exec_command", exec_command)
    return dropped


def test_a_reset_whose_connection_drops_runs_again_on_a_fresh_one(local_lease, monkeypatch):
    m = local_lease().machines[0]
    left = Path(m.workdir) / "outputs" / "r-trial" / "out.txt"
    left.parent.mkdir(parents=True)
    left.write_text("what the trial left")
    with SessionPool([m]) as pool:
        wait_ready(m, timeout=20).close()
        dropped = _drop_before(monkeypatch, m, "leaf_clean")
        got = reset_machine(m, "r-trial", "trial-0")
        assert len(dropped) == 1 and pool.opened == 2
    assert got.clean and not left.parent.exists()


def test_a_reset_whose_connection_drops_twice_fails(local_lease, monkeypatch):
    m = local_lease().machines[0]
    with SessionPool([m]):
        wait_ready(m, timeout=20).close()
        _drop_before(monkeypatch, m, "leaf_clean", times=2)
        with pytest.raises(MachineUnreachable):
            reset_machine(m, "r-trial", "trial-0")
        assert connect(m).run("echo up").stdout.strip() == "up"   # the machine itself is fine


def test_outputs_whose_connection_drops_come_home_on_a_fresh_one(local_lease, monkeypatch, tmp_path):
    m = local_lease().machines[0]
    out = Path(m.workdir) / "outputs" / "r-trial"
    out.mkdir(parents=True)
    (out / "metrics.json").write_text('{"loss": 0.5}')
    with SessionPool([m]) as pool:
        wait_ready(m, timeout=20).close()
        dropped = _drop_before(monkeypatch, m, "tar $s")
        got = fetch_directory(m, str(out), tmp_path / "node-0")
        assert len(dropped) == 1 and pool.opened == 2
    assert got.incomplete is None and got.files == 1
    assert (tmp_path / "node-0" / "metrics.json").read_text() == '{"loss": 0.5}'
