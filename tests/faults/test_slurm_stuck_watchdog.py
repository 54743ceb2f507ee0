"""A Slurm machine whose watchdog does not answer Slurm's SIGTERM (a node too loaded to schedule
it; here frozen by a cgroup v2 freezer, which Slurm's SIGCONT does not thaw) still has its
directory, host key and all, removed before the SIGKILL that follows KillWait: the node step
learns the cluster's KillWait while the machine starts and sizes its wait for the watchdog to fit.
With a fixed 10 s wait, a cluster with KillWait=10 (the test cluster's) SIGKILLed the step first
and the directory stayed on the node. A process the machine's session left behind (it daemonized,
and its sshd went) is not lost to Slurm's tracking either: the node step is its subreaper and kills
what is still below it, so it does not outlive the lease while the watchdog cannot end it. Real test
cluster.
"""
from __future__ import annotations

import os
import secrets
import signal
from pathlib import Path

import pytest

from tests.fixtures.slurm import wait_for
from tests.fixtures.slurm_lease import cluster_plan, cluster_provider

from fleet.ids import new_lease_id
from fleet.paths import subdir
from fleet.remote.agent.containment import cgroup2_mount

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def freezer():
    """A cgroup v2 directory of the test's own, whose processes it can freeze; emptied and removed after."""
    mount = cgroup2_mount()
    if not mount:
        pytest.skip("no cgroup v2 hierarchy here: nothing to freeze a process with")
    path = Path(mount) / f"fleet-test-freeze-{secrets.token_hex(4)}"
    try:
        path.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot make a cgroup here: {exc}")
    try:
        yield path
    finally:
        try:
            if path.joinpath("cgroup.procs").read_text().strip():
                path.joinpath("cgroup.kill").write_text("1")     # frozen processes still die of it
            wait_for(lambda: not path.joinpath("cgroup.procs").read_text().strip(), 30, "the test's cgroup to empty")
        finally:
            path.rmdir()


def _pids_of(cmdline: str) -> list[int]:
    found = []
    for name in (n for n in os.listdir("/proc") if n.isdigit()):
        try:
            if Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").strip() == cmdline.encode():
                found.append(int(name))
        except OSError:
            pass
    return found


def test_a_stuck_watchdog_leaves_neither_the_machine_directory_nor_an_orphan_behind(
        slurm_env, fleet_home, tmp_path, freezer):
    provider, _slurm, nodes_dir = cluster_provider(tmp_path, slurm_env)
    lease = provider.lease(cluster_plan(provider, "slurm-1gpu", 1), new_lease_id(), 120)
    (machine,) = lease.machines
    machine_dir = Path(machine.workdir).parent
    orphan = f"sleep 290.{secrets.randbelow(10 ** 6):06d}"     # unique: found by its command line
    from fleet.remote.ssh import connect
    with connect(machine, timeout=30) as session:
        session.run(f"setsid sh -c 'exec {orphan}' </dev/null >/dev/null 2>&1 &", check=True, timeout=30)
    wait_for(lambda: _pids_of(orphan), 10, "the orphan to start")
    pid = int((Path(machine.workdir) / ".fleet" / "watchdog.pid").read_text().split()[0])
    (freezer / "cgroup.procs").write_text(f"{pid}\n")
    (freezer / "cgroup.freeze").write_text("1")    # Slurm's SIGTERM stays pending: it never ends alone
    wait_for(lambda: "frozen 1" in (freezer / "cgroup.events").read_text(), 10, "the watchdog to freeze")
    provider.release(lease)
    wait_for(lambda: not machine_dir.exists(), 60, "the machine directory to go")
    assert list(nodes_dir.iterdir()) == []
    step_log = (subdir("slurm") / lease.id / "step-0.log").read_text()
    # The cluster's own KillWait (tests/fixtures/slurm.py), learnt from scontrol, not assumed.
    assert "(KillWait 10s)" in step_log, step_log
    try:
        wait_for(lambda: not _pids_of(orphan), 30, "the machine's orphan to end with it")
    finally:
        for pid in _pids_of(orphan):
            os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not (freezer / "cgroup.procs").read_text().strip(), 30, "Slurm to kill the frozen watchdog")
