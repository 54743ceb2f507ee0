"""Who is running lands in the ledger, reports, AWS tags and slot rows: where a name is about to be
written (a lease, a run, a host), a FLEET_USER, `user =` or login name that is not a user name is
one clear line and exit 2 before anything is leased, not a refusal from AWS mid-lease or a name
that breaks a report. Reading takes any name, so nobody is locked out of leases recorded under
the name they had: `fleet status` and `fleet down` still work."""
from __future__ import annotations

import pytest

from fleet.errors import UsageError
from fleet.plan import current_user
from tests.conftest import run_fleet

BAD = ["a b", "x$(id)", "a\nb", "-rf", "=HYPERLINK(1)", "é", "x" * 65, "../etc", "DOMAIN\\jdoe"]


@pytest.mark.parametrize("name", BAD)
def test_a_name_that_is_not_a_user_name_is_refused_where_it_would_be_written(name, monkeypatch):
    monkeypatch.setenv("FLEET_USER", name)
    with pytest.raises(UsageError, match="FLEET_USER .* is not a user name"):
        current_user(check=True)
    with pytest.raises(UsageError, match="user = .* is not a user name"):
        current_user(name, check=True)
    monkeypatch.delenv("FLEET_USER")
    monkeypatch.setenv("LOGNAME", name)
    with pytest.raises(UsageError, match=r"the login name \(\$LOGNAME; set FLEET_USER\) .* is not a user name"):
        current_user(check=True)


@pytest.mark.parametrize("name", BAD)
def test_reading_takes_any_name(name, monkeypatch):
    monkeypatch.setenv("FLEET_USER", name)
    assert current_user() == name and current_user(name) == name


@pytest.mark.parametrize("name", ["alice", "ana.maria", "bob@corp.example", "ci-runner_7", "u+1", "x" * 64])
def test_ordinary_names_pass(name, monkeypatch):
    monkeypatch.setenv("FLEET_USER", name)
    assert current_user(check=True) == name and current_user(name, check=True) == name


def test_the_cli_refuses_a_lease_in_one_line_and_still_shows_status(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    (tmp_path / "fleet.toml").write_text('project = "t"\ncommand = "true"\n')
    done = run_fleet(["up"], cwd=tmp_path, env={"FLEET_USER": "x;rm -rf ~"})
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "FLEET_USER 'x;rm -rf ~' is not a user name" in done.stderr
    assert run_fleet(["status"], cwd=tmp_path, env={"FLEET_USER": "x;rm -rf ~"}).returncode == 0
    (tmp_path / "fleet.toml").write_text('project = "t"\ncommand = "true"\nuser = "two words"\n')
    done = run_fleet(["up"], cwd=tmp_path, env={"FLEET_USER": "alice"})
    assert done.returncode == 2 and "user = 'two words' is not a user name" in done.stderr, done.stderr
    assert not (tmp_path / "home" / "machines").exists() or not any((tmp_path / "home" / "machines").iterdir())
