"""Where a detached Slurm run's supervisor runs (fleet/run/login_launch.py `why_not_login_node`): on
the login node when `[slurm] login` names one and the login node can reach the state and the store
without the laptop (PostgreSQL, S3); otherwise on this computer, with the reason in one line. And
the supervisor there runs Slurm's tools locally while the lease still says how others reach it."""
from __future__ import annotations

from pathlib import Path

import pytest

from fleet.config.model import Config
from fleet.providers.slurm.commands import LocalRunner, SSHRunner
from fleet.providers.slurm.handoff import ON_LOGIN_NODE, LoginShell
from fleet.providers.slurm.provider import SlurmProvider, login_runner
from fleet.providers.slurm.settings import SlurmSettings
from fleet.run.login_launch import has_login_node, why_not_login_node
from fleet.run.types import RunOptions

PG = "postgresql://fleet@db.example/fleet"
LOGIN = "me@login.cluster.org"


def _config(login: str | None = LOGIN, **kw) -> Config:
    base = dict(path=None, base_dir=Path("/tmp"), project="p", name="n", command="train", provider="slurm",
                store="s3://bucket/runs", state_url=PG,
                provider_settings={"slurm": SlurmSettings(login=login)})
    return Config(**{**base, **kw})


@pytest.fixture(autouse=True)
def _no_ambient_state(monkeypatch, tmp_path):
    monkeypatch.delenv("FLEET_STATE_URL", raising=False)
    monkeypatch.delenv(ON_LOGIN_NODE, raising=False)
    monkeypatch.chdir(tmp_path)   # no fleet.toml with a state_url around


def test_slurm_over_ssh_with_postgres_state_and_s3_store_is_supervised_from_the_login_node():
    assert has_login_node(_config())
    assert why_not_login_node(_config(), RunOptions(detached=True)) is None


def test_only_slurm_has_a_login_node():
    assert not has_login_node(_config(provider="local")) and not has_login_node(_config(provider="ssh"))


@pytest.mark.parametrize("kw, options, reason", [
    ({"login": None}, None, "fleet runs on the login node itself"),
    ({"state_url": None}, None, "SQLite"),
    ({"store": None}, None, "s3://"),
    ({"store": "/shared/store"}, None, "s3://"),
    ({}, RunOptions(keep_s=600), "--keep"),
])
def test_otherwise_the_supervisor_stays_here_and_says_why(kw, options, reason):
    why = why_not_login_node(_config(**kw), options)
    assert why and reason in why and "\n" not in why


def test_on_the_login_node_slurms_tools_run_locally_and_the_lease_says_how_others_reach_it(monkeypatch):
    settings = SlurmSettings(login=LOGIN, login_port=2222, identity="/home/me/.ssh/id")
    assert isinstance(login_runner(settings), SSHRunner)
    monkeypatch.setenv(ON_LOGIN_NODE, "someone@else.org")      # another login node's marker: not this one
    assert isinstance(login_runner(settings), SSHRunner)
    monkeypatch.setenv(ON_LOGIN_NODE, LOGIN)
    provider = SlurmProvider(settings)
    assert isinstance(provider.slurm.runner, LocalRunner)
    assert provider.lease_meta()["slurm_login"] == LOGIN and provider.lease_meta()["slurm_login_port"] == 2222


def test_fleet_down_elsewhere_reaches_the_login_node_the_lease_names(monkeypatch):
    from types import SimpleNamespace
    here = SlurmProvider(SlurmSettings())   # no fleet.toml: only the lease knows the cluster
    lease = SimpleNamespace(meta={"slurm_login": LOGIN, "slurm_login_port": 2200, "slurm_jump": "me@gw.org:22"})
    shell = here.login_shell(lease)
    import shutil
    try:
        assert isinstance(shell, LoginShell) and shell.destination == LOGIN
        assert "2200" in shell.runner.base and any(o.startswith("ProxyCommand=") for o in shell.runner.base)
    finally:
        shutil.rmtree(shell._control, ignore_errors=True)   # never connected: only its /tmp directory to remove
    assert here.login_shell(SimpleNamespace(meta={})) is None and here.login_shell() is None
