"""FLEET_HOME given as a relative path (`FLEET_HOME=relhome fleet up`): every process fleet starts
must find the same directory. The local machine's sshd was started with a config path relative to
another directory: `fleet up` waited 120 s for SSH and then blamed the machine."""
from __future__ import annotations

from tests.conftest import processes_under, run_fleet, wait_until


def test_a_relative_fleet_home_runs_like_an_absolute_one(tmp_path):
    work = tmp_path / "project"
    work.mkdir()
    up = run_fleet(["up", "-y", "--gpus", "1", "--ci", "--", "echo", "hello from a relative home"], cwd=work,
                   env={"FLEET_HOME": "relhome"}, timeout=90)
    try:
        assert up.returncode == 0, up.stderr[-2000:]
        assert "hello from a relative home" in up.stdout + up.stderr
        assert (work / "relhome" / "state.db").is_file()
    finally:
        run_fleet(["down", "--all"], cwd=work, env={"FLEET_HOME": "relhome"})
    assert wait_until(lambda: processes_under(work) == [], 20), processes_under(work)
