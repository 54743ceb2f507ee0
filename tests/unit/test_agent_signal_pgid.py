"""`agent signal` (how the controller forwards Ctrl-C or a stop to a run's command) signals the process
group named in the run's pid file. That file sits in the state directory the machine's login writes,
and may outlive its run: a bare number or a stale one had killpg hit whatever group held that id
then. The group is signalled only while its leader's pid names the process `agent exec` started."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from fleet.remote.agent import AGENT_PATH
from fleet.remote.agent import containment as c


def _signal(pidfile, sig="TERM"):
    return subprocess.run([sys.executable, str(AGENT_PATH), "signal", "--pidfile", str(pidfile), "--signal", sig],
                          capture_output=True, text=True, timeout=30)


@pytest.fixture
def group(foreign):
    """A process group of the test's own, not a run's."""
    return foreign


@pytest.mark.parametrize("content", ["{pid}", "{pid} {wrong}", "0", "-5", "abc", ""])
def test_a_pid_file_that_does_not_prove_the_group_signals_nothing(tmp_path, group, content):
    pidfile = tmp_path / "run-x.pid"
    pidfile.write_text(content.format(pid=group.pid, wrong=c.start_time(group.pid) + 1))
    assert _signal(pidfile).returncode == 0
    time.sleep(0.3)
    assert group.poll() is None, f"agent signal hit a group its pid file only named: {content!r}"


def test_the_group_agent_exec_started_is_signalled(tmp_path):
    pidfile = tmp_path / "run-x.pid"
    run = subprocess.Popen([sys.executable, str(AGENT_PATH), "exec", "--pidfile", str(pidfile), "--",
                            "sleep", "300"])
    try:
        end = time.monotonic() + 30
        while not c.read_pid_file(pidfile) and time.monotonic() < end:
            time.sleep(0.05)
        assert c.read_pid_file(pidfile), pidfile.read_text() if pidfile.exists() else "no pid file"
        assert _signal(pidfile).returncode == 0
        assert run.wait(timeout=30) == 128 + 15
    finally:
        if run.poll() is None:
            run.kill()
        run.wait()


def test_one_call_signals_each_proven_group_of_a_machine_and_skips_one_that_is_not(tmp_path, group):
    runs, pidfiles = [], []
    for i in range(2):
        pidfiles.append(tmp_path / f"run-{i}.pid")
        runs.append(subprocess.Popen([sys.executable, str(AGENT_PATH), "exec", "--pidfile", str(pidfiles[i]), "--",
                                      "sleep", "300"]))
    forged = tmp_path / "forged.pid"
    forged.write_text(f"{group.pid} {c.start_time(group.pid) + 1}")
    try:
        end = time.monotonic() + 30
        while not all(c.read_pid_file(p) for p in pidfiles) and time.monotonic() < end:
            time.sleep(0.05)
        argv = [sys.executable, str(AGENT_PATH), "signal", "--signal", "TERM"]
        for p in (pidfiles[0], forged, pidfiles[1]):
            argv += ["--pidfile", str(p)]
        assert subprocess.run(argv, capture_output=True, timeout=30).returncode == 0
        assert [r.wait(timeout=30) for r in runs] == [128 + 15, 128 + 15]
        time.sleep(0.3)
        assert group.poll() is None, "a group the forged pid file named was signalled"
    finally:
        for r in runs:
            if r.poll() is None:
                r.kill()
            r.wait()
