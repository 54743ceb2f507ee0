"""[slurm] login and jump reach ssh's command line as its destination: a value that starts with '-'
is read by ssh as an option, so `login = "-oProxyCommand=touch /tmp/x"` in a fleet.toml ran that
command on the computer of whoever ran `fleet up` or `fleet status` (a committed fleet.toml is
shared by the team). Such values are refused as config errors, before ssh ever runs."""
from __future__ import annotations

import pytest

from fleet.errors import ConfigError
from fleet.providers.slurm.settings import SlurmSettings


@pytest.mark.parametrize("key", ["login", "jump"])
@pytest.mark.parametrize("value", ["-oProxyCommand=touch /tmp/pwned", "-F/tmp/evil_config", "me@host -oX=y"])
def test_a_login_or_jump_that_ssh_would_read_as_an_option_is_refused(key, value):
    with pytest.raises(ConfigError, match=f"{key}"):
        SlurmSettings.parse({"login": "me@login.example", key: value})


def test_ordinary_destinations_are_kept():
    s = SlurmSettings.parse({"login": "me@login.cluster.org", "jump": "me@gateway.org:2222"})
    assert (s.login, s.jump) == ("me@login.cluster.org", "me@gateway.org:2222")


def test_fleet_up_with_such_a_login_runs_nothing_and_says_why(tmp_path, fleet_home):
    from tests.conftest import run_fleet
    canary = tmp_path / "pwned"
    (tmp_path / "fleet.toml").write_text(f'command = "true"\nprovider = "slurm"\n[slurm]\n'
                                         f'login = "-oProxyCommand=touch {canary}"\n')
    proc = run_fleet(["status"], cwd=tmp_path)
    proc = run_fleet(["up", "--yes"], cwd=tmp_path)
    assert proc.returncode == 2 and "login" in proc.stderr and len(proc.stderr.strip().splitlines()) <= 2, proc.stderr
    assert not canary.exists()
