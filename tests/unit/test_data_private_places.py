"""A fleet.toml is often someone else's (a repository just cloned): its `[data]` must not ship the
user's credentials or fleet's own state to the store (perhaps a team's) and to every machine."""
from __future__ import annotations

import pytest

from fleet.errors import UsageError
from fleet.snapshots import open_store
from fleet.snapshots.sources import check_data, pin_data


@pytest.fixture
def user(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text("[default]\naws_secret_access_key = x\n")
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_ed25519").write_text("PRIVATE\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "fh"))
    (tmp_path / "fh" / "leases" / "l1").mkdir(parents=True)
    exp = tmp_path / "exp"
    (exp / "data").mkdir(parents=True)
    (exp / "data" / "train.csv").write_text("1\n")
    (exp / "keys").symlink_to(home / ".ssh")             # a committed link to the user's keys
    return home, exp


@pytest.mark.parametrize("value, place", [
    ("{home}/.aws", "~/.aws"), ("{home}/.aws/credentials", "~/.aws"), ("../home/.ssh", "~/.ssh"),
    ("keys", "~/.ssh"), ("{home}", "~/.ssh"), ("/", "~/.ssh"), ("{fh}/leases", "FLEET_HOME")])
def test_data_naming_credentials_or_fleet_state_is_refused_before_anything_is_read(user, tmp_path, value, place):
    home, exp = user
    value = value.format(home=home, fh=tmp_path / "fh")
    store = open_store(None)
    for check in (lambda: pin_data({"k": value}, exp, store), lambda: check_data({"k": value}, exp, None)):
        with pytest.raises(UsageError, match=r"^\[data\] k = .* is or holds .*" + place) as exc:
            check()
        assert "never ships" in exc.value.message


def test_ordinary_data_outside_the_experiment_still_goes(user, tmp_path):
    home, exp = user
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "a.csv").write_text("2\n")
    pins, _ = pin_data({"train": "data", "shared": str(tmp_path / "datasets")}, exp, open_store(None))
    assert sorted(pins) == ["shared", "train"]
