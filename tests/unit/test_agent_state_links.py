"""The machine agent writes into a state directory that the machine's login owns, while on AWS the
watchdog writing there is root: a link the login planted at the name of a file root was about to
write (`expired.tmp<watchdog pid>`, the pid published in watchdog.pid; `telemetry.jsonl`) had root
truncate or append to whatever it named (/etc/shadow, the supervisor's authorized_keys)."""
from __future__ import annotations

import os

import pytest

from fleet.remote.agent import containment, telemetry


@pytest.fixture
def victim(tmp_path):
    f = tmp_path / "victim"
    f.write_text("root's own\n")
    return f


def test_the_deadline_files_are_never_written_through_a_planted_link(tmp_path, victim):
    state = tmp_path / "state"
    state.mkdir()
    os.symlink(victim, state / f"expired.tmp{os.getpid()}")
    containment.write_atomic(str(state / "expired"), '{"reason": "released"}')
    containment.write_pid_file(str(state / "watchdog.pid"), os.getpid())
    assert victim.read_text() == "root's own\n"
    assert (state / "expired").read_text() == '{"reason": "released"}'
    assert containment.parse_record((state / "watchdog.pid").read_text())[0] == os.getpid()
    assert sorted(p.name for p in state.iterdir()) == ["expired", f"expired.tmp{os.getpid()}", "watchdog.pid"]


def test_telemetry_does_not_append_through_a_planted_link(tmp_path, victim):
    path = tmp_path / "telemetry.jsonl"
    os.symlink(victim, path)
    with pytest.raises(OSError):
        telemetry.run(str(path), 0.01, max_samples=1)
    assert victim.read_text() == "root's own\n"
