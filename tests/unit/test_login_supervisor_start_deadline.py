"""The launcher waits 120 s for the login node's supervisor to say it started (login_launch.py),
then tells the user it did not. A login-node Python slower than that to start (a loaded login
node, an environment on a slow shared filesystem) must not start the run after all, behind the
user's back (who then runs `fleet up -d` again: two runs, both billed). The remote command passes
the login node's own clock at its start; a bootstrap that reaches the fork past START_WITHIN_S
says so and starts nothing."""
from __future__ import annotations

import io
import json
import time

import pytest

from fleet.run import node_supervisor


@pytest.fixture
def no_fork(monkeypatch):
    def refuse(directory):
        raise AssertionError("the supervisor daemonized")
    monkeypatch.setattr(node_supervisor, "_daemonize", refuse)
    monkeypatch.setattr(node_supervisor, "_missing_modules", lambda: [])


def test_a_bootstrap_that_starts_past_the_launchers_wait_starts_nothing(tmp_path, monkeypatch, capsys, no_fork):
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps({"where": "the login node"}) + "\n"))
    started = time.time() - node_supervisor.START_WITHIN_S - 5
    assert node_supervisor.main([str(tmp_path), f"{started:.0f}"]) == 3
    error = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["error"]
    assert "the login node" in error and "too long" in error, error


def test_the_launcher_asks_the_login_nodes_clock_and_a_prompt_start_goes_on(tmp_path, monkeypatch):
    from fleet.run.login_launch import start_command
    assert '"$(date +%s)"' in start_command("/home/me/.fleet-supervisor/r-1", "python3")
    monkeypatch.setattr("sys.stdin", io.StringIO("{}\n"))
    monkeypatch.setattr(node_supervisor, "_missing_modules", lambda: [])
    monkeypatch.setattr(node_supervisor, "_daemonize", lambda directory: 4242)
    assert node_supervisor.main([str(tmp_path), f"{time.time():.0f}"]) == 0
    assert node_supervisor.main([str(tmp_path)]) == 0   # node 0's launcher passes no clock
