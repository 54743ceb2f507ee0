"""Where a detached run's supervisor runs (fleet/run/node_launch.py `why_not_node0`): on node 0 of a
cloud lease when node 0 can reach the state and the store without the laptop; otherwise on this
computer, with the reason in one line."""
from __future__ import annotations

from pathlib import Path

import pytest

from fleet.config.model import Config
from fleet.run.node_launch import why_not_node0
from fleet.run.types import RunOptions

PG = "postgresql://fleet@db.example/fleet"


def _config(**kw) -> Config:
    base = dict(path=None, base_dir=Path("/tmp"), project="p", name="n", command="train", provider="aws",
                store="s3://bucket/runs", state_url=PG)
    return Config(**{**base, **kw})


@pytest.fixture(autouse=True)
def _no_ambient_state(monkeypatch, tmp_path):
    monkeypatch.delenv("FLEET_STATE_URL", raising=False)
    monkeypatch.chdir(tmp_path)   # no fleet.toml with a state_url around


def test_aws_with_postgres_state_and_s3_store_is_supervised_from_node0():
    assert why_not_node0(_config(), RunOptions(detached=True)) is None


def test_the_state_url_may_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("FLEET_STATE_URL", PG)
    assert why_not_node0(_config(state_url=None)) is None


@pytest.mark.parametrize("kw, options, reason", [
    ({"provider": "local"}, None, "this computer"),
    ({"provider": "slurm"}, None, "cannot run a supervisor on node 0"),
    ({"state_url": None}, None, "SQLite"),
    ({"store": None}, None, "s3://"),
    ({"store": "/shared/store"}, None, "s3://"),
    ({}, RunOptions(keep_s=600), "--keep"),
])
def test_otherwise_the_supervisor_stays_here_and_says_why(kw, options, reason):
    why = why_not_node0(_config(**kw), options)
    assert why and reason in why and "\n" not in why


def test_a_later_attempt_from_node0_sets_node0s_own_time_aside_from_the_budget():
    from decimal import Decimal
    from types import SimpleNamespace

    from fleet.errors import BudgetRefused
    from fleet.run.node_supervisor import _less_node0
    node0 = SimpleNamespace(id="i-node0", price_per_hour=Decimal("3.60"))   # $0.06 a minute
    ten_minutes = _config(budget=Decimal("5"), max_duration_s=600)
    assert _less_node0(ten_minutes, node0).budget == Decimal("4.40")
    assert _less_node0(_config(budget=None), node0).budget is None
    with pytest.raises(BudgetRefused, match="node 0"):
        _less_node0(_config(budget=Decimal("0.50"), max_duration_s=600), node0)


def test_node0_without_the_modules_it_needs_says_so_in_one_line_and_starts_nothing(monkeypatch, capsys, tmp_path):
    import io
    import json

    from fleet.run import node_supervisor
    monkeypatch.setattr(node_supervisor, "NEEDS", ("json", "no_such_module_for_fleet"))
    monkeypatch.setattr("sys.stdin", io.StringIO('{"spec": {}}\n'))
    monkeypatch.setattr(node_supervisor, "_daemonize", lambda d: pytest.fail("started without its modules"))
    assert node_supervisor.main([str(tmp_path)]) == 3
    answer = json.loads(capsys.readouterr().out)
    assert "lacks no_such_module_for_fleet" in answer["error"] and "\n" not in answer["error"]


@pytest.mark.parametrize("uid, groups, sudo_exit, reach", [
    ("1000", "fleet", 1, None),                          # EC2's fleet: no sudo
    ("1000", "fleet", 0, "has passwordless sudo"),      # an image that gives it sudo
    ("0", "root", 1, "is root"),
    ("1000", "fleet docker", 1, "is in group docker, which reaches root"),   # GPU images often do
])
def test_the_experiments_login_must_not_reach_root(tmp_path, uid, groups, sudo_exit, reach):
    """ROOT_CHECK, as node 0's shell runs it, with `id` and `sudo` standing in for that machine's."""
    import os
    import subprocess
    from fleet.run.node_login import ROOT_CHECK, root_reach
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("id", f'[ "$1" = -u ] && echo {uid} || echo {groups}'), ("sudo", f"exit {sudo_exit}")):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    out = subprocess.run(["sh", "-c", ROOT_CHECK], capture_output=True, text=True,
                         env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}).stdout
    assert root_reach(out) == reach
    assert root_reach("welcome from .bashrc\n" + out) == reach      # a login's rc files may print first


@pytest.mark.parametrize("answer", ["", "0\n", "bashrc says hi\n0\n", "fleet-root-check 1000\n"])
def test_a_login_that_gives_no_marked_answer_is_refused(answer):
    from fleet.run.node_login import root_reach
    assert root_reach(answer) == "did not answer the root check"


def test_node0s_supervisor_logs_in_as_the_user_its_machine_names():
    from decimal import Decimal
    from fleet.models import Machine
    from fleet.run.node_login import supervisor_login
    node0 = Machine(id="i-1", lease_id="l-1", node_rank=0, host="203.0.113.5", port=22, user="fleet",
                    key_path="/k", host_key="ssh-ed25519 AAAA", workdir="/home/fleet/work",
                    price_per_hour=Decimal("1"), provider_ref={"supervisor_user": "fleet-supervisor",
                                                               "supervisor_dir": "/home/fleet-supervisor/run",
                                                               "supervisor_python": "python3"})
    login, remote = supervisor_login(node0)
    assert (login.user, login.workdir, remote, login.host, login.key_path) == (
        "fleet-supervisor", "/home/fleet-supervisor/run", "/home/fleet-supervisor/run", "203.0.113.5", "/k")
    older = Machine(**{**node0.__dict__, "provider_ref": {}})     # made before machines named one
    assert supervisor_login(older)[0].user == "fleet"
