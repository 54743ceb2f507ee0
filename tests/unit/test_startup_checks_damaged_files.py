"""Every fleet command first checks $FLEET_HOME/supervisors/*/identity.json and $FLEET_HOME/kept/*
(is a detached run's supervisor gone? a kept lease due?). A damaged file there (a pid of null or
Infinity, JSON nested 100,000 deep) gave a traceback on every command, `fleet down --all` included
(red-team finding); now it is one warning at most and the command runs."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import run_fleet


def _identity(pid) -> str:
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return '{"boot_id": %s, "pid_ns": %s, "pid": %s}' % (json.dumps(boot), json.dumps(os.readlink("/proc/self/ns/pid")),
                                                         pid)


@pytest.mark.parametrize("pid", ["null", "Infinity", "[1]", '"x"', "1e400"])
def test_a_damaged_supervisor_identity_breaks_no_command(fleet_home, tmp_path, pid):
    (fleet_home / "supervisors" / "r-x").mkdir(parents=True)
    (fleet_home / "supervisors" / "r-x" / "identity.json").write_text(_identity(pid))
    for argv in (["runs", "ls"], ["down", "--all"], ["status", "--json"]):
        proc = run_fleet(argv, cwd=tmp_path)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (argv, proc.stderr)


def test_a_kept_marker_nested_too_deep_breaks_no_command(fleet_home, tmp_path):
    (fleet_home / "kept").mkdir(parents=True, exist_ok=True)
    (fleet_home / "kept" / "l-x").write_text("[" * 100_000)
    for argv in (["status"], ["down", "--all"]):
        proc = run_fleet(argv, cwd=tmp_path)
        assert proc.returncode == 0 and proc.stderr == "", (argv, proc.stderr)
    assert not (fleet_home / "kept" / "l-x").exists()     # settled as due, and removed (not a warning per command)


@pytest.mark.parametrize("make", ["url-not-a-string", "directory"])
def test_other_damaged_kept_markers_are_settled_and_removed_too(fleet_home, tmp_path, make):
    """Review finding: a marker whose state_url was not a string, or a directory in its place, warned
    on every command and stayed."""
    marker = fleet_home / "kept" / "l-y"
    marker.parent.mkdir(parents=True, exist_ok=True)
    if make == "directory":
        marker.mkdir()
    else:
        marker.write_text('{"deadline": "2000-01-01T00:00:00+00:00", "state_url": 7}')
    for _ in range(2):
        proc = run_fleet(["status"], cwd=tmp_path)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert not marker.exists()
