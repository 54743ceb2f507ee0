"""FLEET_HOME as users name it (red-team findings): a space or a % in it broke every local machine
(its paths went into sshd_config unquoted; sshd expands %u in AuthorizedKeysFile); a quote or a
control character, which no sshd_config quoting survives, is refused in one line; a ~user of no
user was "internal error: RuntimeError", or a directory named ~user in the current directory."""
from __future__ import annotations

import pytest

from tests.conftest import run_fleet

pytestmark = pytest.mark.timeout(180)


def test_a_fleet_home_with_a_space_and_a_percent_runs_machines(tmp_path, experiment):
    home = tmp_path / "team share %u"
    proc = run_fleet(["up", "-y", "--allow-dirty", "--", "echo", "ran-here"], cwd=experiment,
                     env={"FLEET_HOME": str(home)})
    assert proc.returncode == 0 and "ran-here" in proc.stderr, proc.stderr[-2000:]
    assert run_fleet(["down", "--all"], cwd=experiment, env={"FLEET_HOME": str(home)}).returncode == 0


@pytest.mark.parametrize("name", ["line\nbreak", 'quo"te', "esc\x1b[31m"])
def test_a_fleet_home_no_sshd_config_can_hold_is_one_line(tmp_path, name):
    proc = run_fleet(["status"], cwd=tmp_path, env={"FLEET_HOME": str(tmp_path / name)})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 3 and len(lines) == 1 and "contains a quote or a control character" in lines[0]


def test_a_tilde_of_no_user_is_one_line_and_creates_nothing(tmp_path):
    for argv, env in ((["status"], {"FLEET_HOME": "~no-such-user-xyz/fleet"}),
                      (["down", "--all"], {"FLEET_HOME": "~no-such-user-xyz/fleet"}),
                      (["up", "--dry-run", "-f", "~no-such-user-xyz/fleet.toml"], {})):
        proc = run_fleet(argv, cwd=tmp_path, env=env)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 3 and len(lines) == 1 and "internal error" not in lines[0], (argv, proc.stderr)
    assert list(tmp_path.iterdir()) == []
