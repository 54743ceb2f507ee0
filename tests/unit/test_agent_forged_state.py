"""The machine's login may write its state directory and its machine directory's pid file (on the
local provider and a Slurm node the experiment runs as that very user). What it writes there must
never make fleet signal a process that is not the machine's: a `sleep` of the user's own, named by
a pid file forged with its true "PID STARTTIME", or listed in the cgroup.procs of a plain directory
that isolation.json calls the machine's cgroup unit."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from fleet.remote.agent import AGENT_PATH, agent
from fleet.remote.agent import containment as c
from tests.fixtures.watchdog import assert_expired_at_deadline, watchdog


@pytest.fixture
def bystander(foreign):
    """A process of the test's own (conftest's `foreign`)."""
    return foreign


def test_a_fake_unit_named_in_isolation_json_kills_nothing(tmp_path, bystander):
    state = tmp_path / "m" / "root" / ".fleet"
    state.mkdir(parents=True)
    fake = tmp_path / "fake" / "fleet" / "h-0123456789ab" / "l-1-n0"   # the name of a unit, not one
    fake.mkdir(parents=True)
    (fake / "cgroup.events").write_text("populated 1\nfrozen 1\n")
    (fake / "cgroup.freeze").write_text("0")
    (fake / "cgroup.procs").write_text(f"{bystander.pid}\n")
    (state / "isolation.json").write_text(json.dumps({"level": "cgroup", "unit": str(fake)}))
    # In a thread: before the fix it also spun for a minute on the fake `populated 1`.
    worker = threading.Thread(target=agent.stop_machine, args=(str(state), "l-1-n0"),
                              kwargs={"grace_s": 0.1}, daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert bystander.poll() is None, "a process listed in a fake unit's cgroup.procs was killed"
    assert not worker.is_alive(), "fleet down waited on a fake unit"
    assert (fake / "cgroup.procs").exists()


def test_only_units_under_the_cgroup2_mount_are_units():
    assert c.is_unit("/sys/fs/cgroup/fleet/h-0123456789ab/m-0", "m-0", mount="/sys/fs/cgroup")
    assert not c.is_unit("/tmp/x/fleet/h-0123456789ab/m-0", "m-0", mount="/sys/fs/cgroup")
    assert not c.is_unit("/sys/fs/cgroup/user.slice/fleet/h-0123456789ab/m-0", "m-0", mount="/sys/fs/cgroup")
    assert not c.is_unit("/sys/fs/cgroup/fleet/h-0123456789ab/../../../tmp/fleet/h-1/m-0", "m-0",
                         mount="/sys/fs/cgroup")


def test_the_watchdog_expiry_ignores_a_pid_file_naming_another_process(tmp_path, bystander):
    d = tmp_path / "machine"
    state = d / "root" / ".fleet"
    # What the login can write: the machine's sshd.pid, naming the bystander with its true start time.
    d.mkdir()
    (d / "sshd.pid").write_text(f"{bystander.pid} {c.start_time(bystander.pid)}\n")
    with watchdog(state, "m-forged", "--kill-pid-file", str(d / "sshd.pid"), wait_started=False) as proc:
        assert_expired_at_deadline(proc, state)
        time.sleep(0.2)
        assert bystander.poll() is None, "the watchdog's expiry killed a process the pid file merely named"


def test_the_watchdog_expiry_still_ends_the_machines_own_process(tmp_path):
    """The sshd it must end names its sshd_config beside the pid file; a stand-in does the same (a
    copy of `sleep` named sshd: fleet proves an sshd by its binary too)."""
    import shutil
    d = tmp_path / "machine"
    d.mkdir()
    (d / "sshd_config").write_text("")
    shutil.copy(shutil.which("sleep"), tmp_path / "sshd")
    own = subprocess.Popen([f"sshd -f {d / 'sshd_config'}", "300"], executable=str(tmp_path / "sshd"))
    try:
        (d / "sshd.pid").write_text(f"{own.pid} {c.start_time(own.pid)}\n")
        watchdog = subprocess.run([sys.executable, str(AGENT_PATH), "watchdog", "--state-dir", str(d / "state"),
                                   "--machine-id", "m-own", "--ttl", "1", "--max", "2", "--isolation", "pids",
                                   "--kill-pid-file", str(d / "sshd.pid")], capture_output=True, timeout=30)
        assert watchdog.returncode == 0
        assert own.wait(timeout=15) is not None
    finally:
        if own.poll() is None:
            own.kill()
        own.wait()
        assert os.path.exists(d / "sshd.pid")


@pytest.mark.parametrize("plant", ["fifo", "dev-zero"])
def test_a_deadline_file_that_blocks_or_never_ends_does_not_hold_the_watchdog_past_its_maximum(tmp_path, plant):
    """The login may replace `boot_deadline` with a FIFO (open blocks until a writer comes) or a link to
    /dev/zero (a read never ends): the watchdog hung in its read and never expired the machine."""
    state = tmp_path / "state"
    with watchdog(state, "m-blocked") as proc:
        planted = tmp_path / "planted"
        if plant == "fifo":
            os.mkfifo(planted)
        else:
            planted.symlink_to("/dev/zero")
        os.replace(planted, state / "boot_deadline")
        assert_expired_at_deadline(proc, state)


def test_pid_and_isolation_files_that_block_hang_neither_fleet_down_nor_status(tmp_path):
    from fleet.providers.local.liveness import machine_state
    d = tmp_path / "m"
    state = d / "root" / ".fleet"
    state.mkdir(parents=True)
    for path in (d / "sshd.pid", state / "watchdog.pid", state / "isolation.json"):
        os.mkfifo(path)
    assert c.read_pid_file(d / "sshd.pid") is None
    worker = threading.Thread(target=lambda: (agent.stop_machine(str(state), "m", grace_s=0.1),
                                              machine_state({"dir": str(d), "sshd_pid": os.getpid()})),
                              daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "a FIFO in the machine's directory hung fleet down or fleet status"
