"""FLEET_STATE_URL wins over a fleet.toml's state_url (docs/team.md): the file is often someone
else's (a cloned repository), and its state_url took the user's runs out of the team's budgets and
ledger into a database of the file's choosing."""
from __future__ import annotations

from fleet.config.loader import load_config
from fleet.run.remote_supervisor import supervisor_state_url
from fleet.state import open_state


def test_the_environment_state_url_beats_the_repositorys(tmp_path, monkeypatch):
    team, theirs = tmp_path / "team.db", tmp_path / "theirs.db"
    (tmp_path / "fleet.toml").write_text(f'command = "true"\nstate_url = "sqlite:///{theirs}"\n')
    monkeypatch.setenv("FLEET_STATE_URL", f"sqlite:///{team}")
    config = load_config(cwd=tmp_path)
    assert config.state_url == f"sqlite:///{team}" == supervisor_state_url(config)
    open_state(config.state_url).close()
    assert team.exists() and not theirs.exists()


def test_the_files_state_url_counts_without_one_in_the_environment_and_an_override_beats_both(
        tmp_path, monkeypatch):
    (tmp_path / "fleet.toml").write_text('command = "true"\nstate_url = "sqlite:///file.db"\n')
    monkeypatch.delenv("FLEET_STATE_URL", raising=False)
    assert load_config(cwd=tmp_path).state_url == "sqlite:///file.db"
    monkeypatch.setenv("FLEET_STATE_URL", "sqlite:///env.db")
    assert load_config(cwd=tmp_path, overrides={"state_url": "sqlite:///given.db"}).state_url == "sqlite:///given.db"
