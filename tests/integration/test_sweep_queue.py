"""Waiting for GPU slots on team hosts: a second sweep with --wait queues behind the first one's
slots (listed by `fleet queue`), then runs; without --wait it is refused at once (exit 10); and
the queue is first come, first served."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from fleet.errors import ExitCode
from fleet.providers.ssh.queue import WaitQueue
from fleet.state.db import Database
from tests.conftest import FLEET, processes_under, run_fleet, wait_until
from tests.fixtures.ssh_hosts import PYTHON, HostFarm, toml_hosts


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    farm = HostFarm(tmp_path_factory.mktemp("queue-hosts"))
    farm.start("q0")
    yield farm
    farm.stop()
    assert not processes_under(farm.base / "hosts")


def _held_until(gate, label: str) -> str:
    """A trial that says it is up, then holds its slot until the test opens the gate (a file; the
    hosts share this filesystem), at most 3 minutes: what the test does meanwhile may take as long
    as two busy cores make it, and the slots are still held when it is done."""
    return f"echo {label}; i=0; while [ ! -e {gate} ] && [ $i -lt 1800 ]; do sleep 0.1; i=$((i+1)); done"


def _experiment(tmp_path, farm, extra: str = "") -> tuple[str, dict]:
    d = tmp_path / "exp"
    d.mkdir()
    (d / "fleet.toml").write_text(
        f'project = "team"\ncommand = "true"\nprovider = "ssh"\ntemplate = "hosts"\nmax_duration = "10m"\n'
        f'python = "{PYTHON}"\n{extra}\n' + toml_hosts(farm.configs(gpus=2)))
    env = {"HOME": str(farm.home), "FLEET_HOME": str(tmp_path / "fleet-home"), "FLEET_USER": "carol",
           "FLEET_STATE_URL": ""}
    return str(d), env


def test_a_second_sweep_waits_for_the_first_ones_slots_then_runs(farm, tmp_path):
    d, env = _experiment(tmp_path, farm)
    full = {**{k: v for k, v in os.environ.items() if k not in ("CI", "GITHUB_ACTIONS")}, **env}
    gate = tmp_path / "gate"
    first = subprocess.Popen([FLEET, "sweep", "--param", "x=1,2", "--parallel", "2", "--gpus-per-trial", "1",
                              "--", "sh", "-c", _held_until(gate, "first-{x}-up")], cwd=d, env=full,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = None
    try:
        lines: list[str] = []
        assert wait_until(lambda: lines.append(first.stderr.readline()) or "first-1-up" in "".join(lines)
                          or first.poll() is not None, timeout=120, interval=0), "".join(lines)[-2000:]
        refused = run_fleet(["sweep", "--param", "x=1", "--", "true"], cwd=d, env=env)
        assert refused.returncode == ExitCode.INFRASTRUCTURE and "not enough free GPU slots" in refused.stderr
        second = subprocess.Popen([FLEET, "sweep", "--param", "x=1", "--wait", "2m", "--json", "--",
                                   "echo", "second-ran"], cwd=d, env=full, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)

        def queued() -> list:
            proc = run_fleet(["queue", "--json"], cwd=d, env=env)
            return json.loads(proc.stdout)["waiting"] if proc.returncode == 0 else []
        assert wait_until(lambda: len(queued()) == 1, timeout=60, interval=0.3)
        [waiter] = queued()
        assert waiter["owner"] == "carol" and waiter["position"] == 1 and "not enough free GPU slots" in waiter["reason"]
        gate.touch()                                                 # the first sweep's trials end now
        assert first.wait(timeout=120) == 0, first.stderr.read()[-2000:]
        out, err = second.communicate(timeout=120)
        assert second.returncode == 0, err[-2000:]
        assert "queue: job" in err and "waiting" in err
        assert json.loads(out)["trials"][0]["state"] == "succeeded" and "second-ran" in err
        assert queued() == []                                        # left the queue once served
    finally:
        gate.touch()
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


def test_a_user_past_the_per_user_limit_waits_without_holding_up_others(farm, tmp_path):
    d, env = _experiment(tmp_path, farm, "[queue]\nmax_gpus_per_user = 1\n")
    full = {**{k: v for k, v in os.environ.items() if k not in ("CI", "GITHUB_ACTIONS")}, **env}
    gate = tmp_path / "gate"
    first = subprocess.Popen([FLEET, "sweep", "--param", "x=1", "--", "sh", "-c", _held_until(gate, "first-up")],
                             cwd=d, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = None
    try:
        lines: list[str] = []
        assert wait_until(lambda: lines.append(first.stderr.readline()) or "first-up" in "".join(lines)
                          or first.poll() is not None, timeout=120, interval=0), "".join(lines)[-2000:]
        refused = run_fleet(["sweep", "--param", "x=1", "--", "true"], cwd=d, env=env)
        assert refused.returncode == ExitCode.INFRASTRUCTURE and "per-user limit of 1" in refused.stderr
        second = subprocess.Popen([FLEET, "sweep", "--param", "x=1", "--wait", "2m", "--", "echo", "second-ran"],
                                  cwd=d, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert wait_until(lambda: json.loads(run_fleet(["queue", "--json"], cwd=d, env=env).stdout)["waiting"],
                          timeout=60, interval=0.3)
        # carol's waiting request does not hold up dave: one slot is free and it is his at once
        other = run_fleet(["sweep", "--param", "x=1", "--", "echo", "dave-ran"], cwd=d, env={**env, "FLEET_USER": "dave"})
        assert other.returncode == 0 and "dave-ran" in other.stderr, other.stderr[-2000:]
        gate.touch()
        assert first.wait(timeout=120) == 0
        _, err = second.communicate(timeout=120)
        assert second.returncode == 0 and "per-user limit" in err and "second-ran" in err, err[-2000:]
    finally:
        gate.touch()
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


@pytest.fixture(params=["sqlite", "postgresql"])
def queue_db(request, tmp_path):
    """The queue on both state stores (a team shares PostgreSQL)."""
    if request.param == "sqlite":
        db = Database(tmp_path / "state.db")
        yield db
        db.close()
        return
    from fleet.state import open_state
    state = open_state(request.getfixturevalue("postgres_url"))
    yield state.db
    state.close()


def test_the_queue_is_first_come_first_served_and_forgets_dead_waiters(queue_db):
    queue = WaitQueue(queue_db)
    for lease in ("l-a", "l-b", "l-c"):
        queue.join(lease_id=lease, owner="u", project="p", gpus=2, machines=1, provider="ssh", reason="full")
    assert [w.lease_id for w in queue.waiting()] == ["l-a", "l-b", "l-c"]
    assert (queue.ahead_of("l-a"), queue.ahead_of("l-c")) == (0, 2)
    queue.db.execute("UPDATE lease_waits SET seen_at = '2000-01-01T00:00:00+00:00' WHERE lease_id = 'l-a'")
    assert queue.ahead_of("l-c") == 1                                 # a waiter that stopped refreshing
    queue.touch("l-b", "over its user's limit", over_limit=True)
    assert queue.ahead_of("l-c") == 0                                 # one held back by its own user's limit
    queue.leave("l-b")
    assert [w.lease_id for w in queue.waiting()] == ["l-c"]
