"""Verified pids and cgroup units (fleet/remote/agent/containment.py): a pid is signalled only while
it is provably the process that was recorded."""
from __future__ import annotations

import os
import subprocess

import pytest

from fleet.isolation import namespace
from fleet.remote.agent import containment as c


@pytest.fixture
def sleeper(foreign):
    """A process of the test's own (conftest's `foreign`)."""
    return foreign


def test_a_pid_file_records_the_start_time_and_reads_back(tmp_path, sleeper):
    path = tmp_path / "x.pid"
    c.write_pid_file(path, sleeper.pid)
    pid, start = c.read_pid_file(path)
    assert pid == sleeper.pid and start == c.start_time(sleeper.pid) and c.same_process(pid, start)


@pytest.mark.parametrize("text", ["", "1234", "1234 abc", "1 5", "-3 5", "12 34 56", "garbage"])
def test_anything_but_pid_and_start_time_is_unverifiable(text):
    assert c.parse_record(text) is None


def test_a_reused_pid_is_never_signalled(sleeper):
    wrong = c.start_time(sleeper.pid) + 1          # the pid file was written for an earlier process
    assert c.verify(sleeper.pid, wrong) is None
    c.kill_verified([(sleeper.pid, wrong)], grace_s=0.1, timeout=0.5)
    assert sleeper.poll() is None, "a process whose start time does not match was signalled"


def test_the_recorded_process_itself_is_ended(sleeper):
    record = (sleeper.pid, c.start_time(sleeper.pid))
    assert c.kill_verified([record], grace_s=5)
    assert sleeper.wait(timeout=10) is not None


def test_descendants_only_of_live_verified_roots(sleeper):
    me = (os.getpid(), c.start_time(os.getpid()))
    assert (sleeper.pid, c.start_time(sleeper.pid)) in c.descendants([me])
    assert c.descendants([(os.getpid(), me[1] + 1)]) == []      # a stale root has no descendants


def test_mountinfo_finds_the_unified_hierarchy_in_a_hybrid_layout(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text("32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
                    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n")
    assert c.cgroup2_mount(str(info)) == "/sys/fs/cgroup/unified"
    info.write_text("32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n")
    assert c.cgroup2_mount(str(info)) is None


def test_only_fleet_units_of_the_named_machine_are_units():
    assert c.is_unit("/sys/fs/cgroup/fleet/h-0123456789ab/l-1-n0", "l-1-n0", mount="/sys/fs/cgroup")
    assert not c.is_unit("/sys/fs/cgroup/fleet/h-0123456789ab/l-1-n0", "l-2-n0", mount="/sys/fs/cgroup")
    assert not c.is_unit("/sys/fs/cgroup/system.slice/sshd.service", None)
    assert not c.is_unit("/sys/fs/cgroup/fleet/h-0123456789ab/../../system.slice")
    assert c.unit_path("h-0123456789ab", "../../etc", mount="/sys/fs/cgroup") is None


@pytest.mark.skipif(not (c.cgroup2_mount() and os.geteuid() == 0), reason="needs a writable cgroup v2 (root)")
def test_a_unit_ends_every_member_and_is_removed():
    unit = c.unit_path(namespace(f"unit-test-{os.getpid()}"), "m-0")
    c.create_unit(unit)
    try:
        # The member double-forks and leaves its session: still inside the unit.
        subprocess.run(["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs"; setsid sh -c "(sleep 300 &) &"',
                        f"{unit}/work"], check=True)
        assert c.members(f"{unit}/work") and c.populated(f"{unit}/work")
        assert c.kill_unit(f"{unit}/work", timeout=60)
        assert not c.populated(f"{unit}/work") and c.members(f"{unit}/work") == []
    finally:
        c.kill_unit(unit, timeout=60)
        assert c.remove_unit(unit)
    assert not os.path.exists(os.path.dirname(unit))


def test_the_single_file_agent_runs_alone(tmp_path):
    """AWS user data and image builders ship agent.py alone: containment must travel inside it."""
    import json
    import sys

    from fleet.remote.agent import agent_source
    (tmp_path / "agent.py").write_text(agent_source())
    (tmp_path / "state").mkdir()
    out = subprocess.run([sys.executable, "-I", str(tmp_path / "agent.py"), "status", "--state-dir",
                          str(tmp_path / "state")], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["watchdog_alive"] is False
