"""Recovery on team hosts (the ssh provider): a host that goes down mid-run (its sshd, every SSH
session on it and every process of the run killed, as a power cut would) is a lost machine; with
`recovery = "always"` the run resumes on the other host from its last checkpoint, at attempt 2,
and finishes with the right step count (80); nothing of it is left running on either host. With
no host left to replace it, the run ends `error` at once, saying so and naming `fleet up --resume`,
its checkpoint in the store."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.conftest import processes_under, run_fleet, start_fleet_up, wait_for_line, wait_until
from tests.e2e.test_checkpoints import TRAIN_HELD_IN_ATTEMPT_1
from tests.fixtures.procs import live_processes_under
from tests.fixtures.ssh_hosts import PYTHON, FakeHost, HostFarm, toml_hosts


@pytest.fixture
def farm(tmp_path):
    farm = HostFarm(tmp_path / "farm")
    for name in ("ha", "hb"):
        farm.start(name)
    yield farm
    farm.stop()
    for host in farm.hosts:   # a powered-off host's leftovers (its watchdog) are this test's to end
        for pid, _cmd in live_processes_under(host.directory):
            _kill(pid)
    assert wait_until(lambda: not processes_under(farm.base / "hosts"), 30), processes_under(farm.base / "hosts")


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[-1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _power_off(host: FakeHost) -> None:
    """The host goes down: its sshd and every session it serves, and every process of its leases, all
    at one moment. Killed one by one, a session's agent could see its command die first and send
    the controller an exit status (137, a failed command) that no powered-off host ever sends; so
    everything is frozen (SIGSTOP, until no new process appears) before anything is killed."""
    frozen: set[int] = set()
    for _ in range(10):
        doomed = (set(_descendants(host.pid)) | {pid for pid, _ in live_processes_under(host.directory)}) - frozen
        if not doomed:
            break
        for pid in doomed:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                pass
        frozen |= doomed
    for pid in frozen:
        _kill(pid)
    host.kill_sshd()


def _experiment(tmp_path: Path, farm: HostFarm) -> Path:
    d = tmp_path / "exp"
    d.mkdir()
    (d / "train.py").write_text(TRAIN_HELD_IN_ATTEMPT_1)   # attempt 1 is still running when its machine goes
    (d / "fleet.toml").write_text(
        'project = "t"\nprovider = "ssh"\ntemplate = "hosts"\nmax_duration = "10m"\n'
        f'python = "{PYTHON}"\ncommand = "python train.py 80 0.1"\ncheckpoint_interval = "1s"\n'
        'recovery = "always"\nmax_restarts = 2\n\n' + toml_hosts(farm.configs(gpus=1)))
    return d


def _run_and_power_off(farm: HostFarm, tmp_path: Path, *, every_host: bool = False):
    """`fleet up` of the training; once it has uploaded a checkpoint, its host goes down (with
    `every_host`, the other host too: no replacement exists). Returns its JSON summary, its output,
    the host that went down, the environment of its fleet commands, the experiment and the exit code."""
    exp = _experiment(tmp_path, farm)
    env = {"HOME": str(farm.home), "FLEET_HOME": str(tmp_path / "fleet-home"), "FLEET_STATE_URL": "",
           "FLEET_GRACE": "10"}
    proc = start_fleet_up(exp, ["--gpus", "1", "--json"], env=env)
    try:
        seen = wait_for_line(proc, "attempt 1", timeout=120)
        seen += wait_for_line(proc, "fleet: checkpoint:", timeout=60)   # a periodic upload happened
        status = json.loads(run_fleet(["status", "--json"], cwd=exp, env=env).stdout)
        [lease] = status["leases"]
        [address] = [m["address"] for m in lease["machines"]]
        [down] = [h for h in farm.hosts if address.endswith(f":{h.port}")]
        if every_host:
            for host in farm.hosts:
                if host is not down:
                    _power_off(host)
        _power_off(down)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    out = seen + out
    return json.loads(out[out.index("\n{") + 1:]), out, down, env, exp, proc.returncode


def test_a_host_that_goes_down_mid_run_is_replaced_by_another_and_the_run_resumes(farm, tmp_path):
    summary, out, down, env, exp, _rc = _run_and_power_off(farm, tmp_path)
    assert summary["status"] == "succeeded" and summary["exit_code"] == 0, out[-4000:]
    assert summary["attempt"] == 2 and summary["run_id"].endswith("-a2"), summary
    first, second = summary["attempts"]
    assert first["machines_lost"] and first["status"] == "error", first
    assert second["status"] == "succeeded" and second["lease_id"] != first["lease_id"], second
    assert "resuming on new machines" in out, out[-4000:]
    assert "[0] rank 0 attempt 2 resumed 1 from " in out, out[-4000:]
    resumed_from = int(out.split("[0] rank 0 attempt 2 resumed 1 from ")[1].split()[0])
    assert 0 < resumed_from < 80, out[-4000:]   # continued from its last uploaded checkpoint
    assert "rank 0 finished at 80" in out
    [other] = [h for h in farm.hosts if h is not down]
    assert [m["zone"] for m in summary["launched"]] == [other.name], summary["launched"]   # on the other host
    runs = json.loads(run_fleet(["runs", "show", summary["run_id"], "--json"], cwd=exp, env=env).stdout)
    assert [a["attempt"] for a in runs["attempts"]] == [1, 2]
    assert json.loads(run_fleet(["status", "--json"], cwd=exp, env=env).stdout)["leases"] == []
    assert not live_processes_under(other.leases_dir), live_processes_under(other.leases_dir)


def test_with_no_host_left_the_run_ends_saying_so_with_its_checkpoint(farm, tmp_path):
    summary, out, _down, env, exp, rc = _run_and_power_off(farm, tmp_path, every_host=True)
    assert rc == 10 and summary["status"] == "error", out[-4000:]
    first = summary["run_id"]
    assert [a["attempt"] for a in summary["attempts"]] == [1] and summary["attempts"][0]["machines_lost"]
    message = summary["message"]
    assert "not resumed after attempt 1" in message and "no SSH host is up" in message, message
    assert f"fleet up --resume {first}" in summary["message"], summary
    from fleet.run.checkpoints import latest_snapshots
    from fleet.snapshots import open_store
    store = open_store(str(Path(env["FLEET_HOME"]) / "store"))
    assert list(latest_snapshots(store, first, [0])) == [0]   # what `--resume` would restore is there
    assert json.loads(run_fleet(["status", "--json"], cwd=exp, env=env).stdout)["leases"] == []
