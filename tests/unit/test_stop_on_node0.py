"""`fleet down` / `fleet reap` on a run supervised from node 0 (fleet/run/node_launch.py
`stop_on_node0`). The run row is the shared state's: on a team host, several leases' supervisors run
under one supervisor login, so a row naming another lease's directory and pid must not get that
supervisor signalled. Node 0 here is this computer, reached through a shell that runs each command
with `sh -c`, so real processes are checked and signalled."""
from __future__ import annotations

import subprocess
from contextlib import contextmanager
from types import SimpleNamespace

import pytest

from fleet.providers.slurm.handoff import ShellResult
from fleet.run.context import SilentEvents
from fleet.run.node_launch import stop_on_node0
from tests.unit.test_stop_on_login_node import SUPERVISOR_CODE, procs  # noqa: F401  (a fixture)



@pytest.fixture
def node0(monkeypatch):
    log: list[str] = []

    class Here:
        def run(self, command, check=True, timeout=60):
            log.append(command)
            done = subprocess.run(["sh", "-c", command], capture_output=True, timeout=timeout)
            return ShellResult(done.returncode, done.stdout.decode(), done.stderr.decode())

    @contextmanager
    def connect(machine, timeout=10):
        yield Here()
    monkeypatch.setattr("fleet.remote.ssh.connect", connect)
    return log


def _state(lease_id, home):
    from fleet.models import Machine
    machine = Machine(id="m-0", lease_id=lease_id, node_rank=0, host="127.0.0.1", port=22, user="fleet", key_path="k",
                      host_key="", workdir=str(home),
                      provider_ref={"supervisor_user": "sup", "supervisor_dir": f".fleet-supervisor/{lease_id}"})
    lease = SimpleNamespace(id=lease_id, machines=[machine])
    return SimpleNamespace(get_lease=lambda _id: lease, lease_status=lambda _id: ("released", None))


def _run(pid, directory):
    return {"id": "r-a", "lease_id": "l-a", "meta": {"supervised_on": "m-0", "supervisor_dir": str(directory),
                                                     "controller": {"pid": pid}}}


def test_the_leases_own_supervisor_is_signalled(tmp_path, node0, procs):
    own = tmp_path / ".fleet-supervisor" / "l-a"
    sup = procs("-c", SUPERVISOR_CODE, str(own))
    assert stop_on_node0(_state("l-a", tmp_path), _run(sup.pid, own), SilentEvents(), wait_s=0)
    assert sup.wait(timeout=10) == -15


def test_a_row_naming_another_leases_supervisor_signals_nothing(tmp_path, node0, procs):
    other = tmp_path / ".fleet-supervisor" / "l-b"     # another lease's, same supervisor login
    victim = procs("-c", SUPERVISOR_CODE, str(other))
    assert not stop_on_node0(_state("l-a", tmp_path), _run(victim.pid, other), SilentEvents(), wait_s=0)
    assert victim.poll() is None and not any("kill" in c for c in node0)


def test_a_pid_that_is_no_number_is_not_a_traceback(tmp_path, node0):
    own = tmp_path / ".fleet-supervisor" / "l-a"
    assert not stop_on_node0(_state("l-a", tmp_path), _run("12; rm -rf ~", own), SilentEvents(), wait_s=0)
    assert node0 == []
