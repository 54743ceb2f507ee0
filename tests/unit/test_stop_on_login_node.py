"""`fleet down` / `fleet reap` on a run supervised from the Slurm login node signals that supervisor
over ssh (fleet/run/login_launch.py `stop_on_login_node`). The pid and the directory come from the
run row, in the shared state: fleet must signal only a process it proves, at the moment it signals,
to be this run's fleet.run.node_supervisor.

Here the "login node" is this computer, reached through a shell that runs each command with `sh -c`
(as LoginShell does over ssh), so real processes are checked and signalled."""
from __future__ import annotations

import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from fleet.providers.slurm.handoff import ShellResult
from fleet.providers.slurm.provider import SlurmProvider
from fleet.providers.slurm.settings import SlurmSettings
from fleet.run.context import SilentEvents
from fleet.run.login_launch import SUPERVISOR_DIR, stop_on_login_node

SUPERVISOR_CODE = "import time; 'fleet.run.node_supervisor'; time.sleep(60)"


class HereShell:
    destination = "here"

    def __init__(self, log):
        self.log = log

    def run(self, command, *, stdin=None, check=True, timeout=60):
        self.log.append(command)
        done = subprocess.run(["sh", "-c", command], input=stdin or b"", capture_output=True, timeout=timeout)
        return ShellResult(done.returncode, done.stdout.decode(), done.stderr.decode())

    def close(self):
        pass


@pytest.fixture
def login_node(monkeypatch):
    log: list[str] = []

    class Here(SlurmProvider):
        def login_shell(self, lease=None):
            return HereShell(log)

    monkeypatch.setattr("fleet.providers.registry.get", lambda name, **kw: Here(SlurmSettings(login="me@here")))
    return log


@pytest.fixture
def procs():
    started = []

    def start(*argv):
        p = subprocess.Popen([sys.executable, *argv])
        started.append(p)
        time.sleep(0.3)
        return p
    yield start
    for p in started:
        p.kill()
        p.wait()


def _state(lease_id="l-1"):
    lease = SimpleNamespace(id=lease_id, provider="slurm", meta={"slurm_login": "me@here"})
    return SimpleNamespace(get_lease=lambda _id: lease, lease_status=lambda _id: ("released", None))


def _run(run_id, pid, remote):
    return {"id": run_id, "lease_id": "l-1", "status": "running",
            "meta": {"detached": True, "supervised_on": "login node", "supervisor_dir": remote,
                     "controller": {"pid": pid}}}


def test_this_runs_supervisor_is_signalled_and_the_check_and_the_signal_are_one_command(tmp_path, login_node, procs):
    remote = str(tmp_path / SUPERVISOR_DIR / "r-1")
    sup = procs("-c", SUPERVISOR_CODE, remote)
    assert stop_on_login_node(_state(), _run("r-1", sup.pid, remote), SilentEvents(), wait_s=0)
    assert sup.wait(timeout=10) == -15
    # A pid read in one round trip and signalled in another may be a new process by then.
    kills = [c for c in login_node if "kill" in c]
    assert kills and all(f"/proc/{sup.pid}/" in c for c in kills), login_node


def test_a_later_attempt_signals_its_runs_supervisor(tmp_path, login_node, procs):
    remote = str(tmp_path / SUPERVISOR_DIR / "r-1")
    sup = procs("-c", SUPERVISOR_CODE, remote)
    assert stop_on_login_node(_state(), _run("r-1-a2", sup.pid, remote), SilentEvents(), wait_s=0)
    assert sup.wait(timeout=10) == -15


@pytest.mark.parametrize("planted", ["/", "{tmp}", "{tmp}/" + SUPERVISOR_DIR + "/other-run",
                                     "{tmp}/" + SUPERVISOR_DIR + "/r-1\n/"])
def test_a_planted_directory_that_is_not_this_runs_supervisor_dir_signals_nothing(tmp_path, login_node, procs,
                                                                                   planted):
    # A process of the user's whose argv happens to hold the planted directory and the module name.
    remote = planted.format(tmp=tmp_path)
    victim = procs("-c", SUPERVISOR_CODE, remote)
    assert not stop_on_login_node(_state(), _run("r-1", victim.pid, remote), SilentEvents(), wait_s=0)
    time.sleep(0.2)
    assert victim.poll() is None


def test_a_process_that_is_not_fleets_supervisor_is_not_signalled(tmp_path, login_node, procs):
    remote = str(tmp_path / SUPERVISOR_DIR / "r-1")
    other = procs("-c", "import time; time.sleep(60)", remote)
    assert not stop_on_login_node(_state(), _run("r-1", other.pid, remote), SilentEvents(), wait_s=0)
    time.sleep(0.2)
    assert other.poll() is None


@pytest.mark.parametrize("pid", [-1, "1; touch /tmp/x"])
def test_odd_pids_signal_nothing(tmp_path, login_node, pid):
    remote = str(tmp_path / SUPERVISOR_DIR / "r-1")
    assert not stop_on_login_node(_state(), _run("r-1", pid, remote), SilentEvents(), wait_s=0) and not any("kill" in c and "-1" in c.split("kill", 1)[1][:12] for c in login_node)


@pytest.mark.parametrize("run_id", ["../thesis", "..", ".", "x/../../thesis", "-rf"])
def test_the_supervisor_dir_made_from_a_run_id_out_of_the_state_never_removes_anything_else(tmp_path, run_id):
    """`fleet reap` resumes a lost run under its own id (a row of the shared state): the launcher
    `rm -rf`s ~/.fleet-supervisor/<id> before copying fleet there."""
    from fleet.errors import FleetError
    from fleet.run.login_launch import _copy
    home = tmp_path / "home"
    (home / "thesis").mkdir(parents=True)
    (home / "thesis" / "chapter1.tex").write_text("years of work")
    (home / SUPERVISOR_DIR / "x").mkdir(parents=True)
    with pytest.raises(FleetError, match="run id"):
        _copy(HereShell([]), f"{home}/{SUPERVISOR_DIR}/{run_id}", SimpleNamespace(path=None))
    assert (home / "thesis" / "chapter1.tex").read_text() == "years of work"
    assert (home / SUPERVISOR_DIR).is_dir()
