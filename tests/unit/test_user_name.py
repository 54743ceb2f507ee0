"""Who is running lands in the ledger, reports, AWS tags and slot rows: a FLEET_USER or `user =` that
is not a user name is one clear line and exit 2 before anything is leased, not a refusal from AWS
mid-lease or a name that breaks a report."""
from __future__ import annotations

import pytest

from fleet.errors import UsageError
from fleet.plan import current_user
from tests.conftest import run_fleet


@pytest.mark.parametrize("name", ["a b", "x$(id)", "a\nb", "-rf", "=HYPERLINK(1)", "é", "x" * 65, "../etc"])
def test_a_name_that_is_not_a_user_name_is_refused_from_either_source(name, monkeypatch):
    monkeypatch.setenv("FLEET_USER", name)
    with pytest.raises(UsageError, match="FLEET_USER .* is not a user name"):
        current_user()
    with pytest.raises(UsageError, match="user = .* is not a user name"):
        current_user(name)


@pytest.mark.parametrize("name", ["alice", "ana.maria", "bob@corp.example", "ci-runner_7", "u+1", "x" * 64])
def test_ordinary_names_pass(name, monkeypatch):
    monkeypatch.setenv("FLEET_USER", name)
    assert current_user() == name and current_user(name) == name


def test_the_cli_says_it_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    (tmp_path / "fleet.toml").write_text('project = "t"\ncommand = "true"\n')
    done = run_fleet(["status"], cwd=tmp_path, env={"FLEET_USER": "x;rm -rf ~"})
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "FLEET_USER 'x;rm -rf ~' is not a user name" in done.stderr
    (tmp_path / "fleet.toml").write_text('project = "t"\ncommand = "true"\nuser = "two words"\n')
    done = run_fleet(["up"], cwd=tmp_path, env={"FLEET_USER": "alice"})
    assert done.returncode == 2 and "user = 'two words' is not a user name" in done.stderr, done.stderr
    assert not (tmp_path / "home" / "machines").exists() or not any((tmp_path / "home" / "machines").iterdir())
