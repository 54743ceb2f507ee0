"""fleet ends everything a lease started, however it daemonised, and never a process that is not its
own (issue 13, "Ownership of processes"), through the real CLI."""
from __future__ import annotations

import json
import os
import signal
import time
import uuid

import pytest

from fleet.isolation import leftover_units
from fleet.remote.agent.containment import cgroup2_mount, start_time
from tests.conftest import processes_under, run_fleet, start_fleet_up, wait_for_line, wait_until

HAS_CGROUP = bool(cgroup2_mount()) and os.geteuid() == 0


def _marked(marker: str) -> list[int]:
    """Live, non-zombie processes whose command line carries `marker`."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmd = open(f"/proc/{name}/cmdline", "rb").read()
            state = open(f"/proc/{name}/stat").read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmd and state != "Z" and int(name) != os.getpid():
            found.append(int(name))
    return found


def _escaping_command(marker: str) -> str:
    """Starts a process that drops the machine's tag, leaves the session and is re-parented away
    from everything fleet started (setsid + double fork), then reports and waits."""
    inner = f"exec -a {marker} sleep 900"
    return (f"env -u FLEET_MACHINE_ID -u FLEET_MACHINE_ROOT setsid sh -c '(bash -c \"{inner}\" &) &'; "
            f"echo escaped; sleep 120")


@pytest.mark.parametrize("pid_file", ["root/.fleet/watchdog.pid", "sshd.pid"])
@pytest.mark.parametrize("isolation", ["auto", "pids"])
def test_a_stale_pid_file_never_kills_a_foreign_process(experiment, fleet_home, foreign, pid_file, isolation):
    machine = fleet_home / "machines" / "l-deadbeef-n0"
    (machine / "root" / ".fleet").mkdir(parents=True)
    stale = machine / pid_file
    for content in (str(foreign.pid), f"{foreign.pid} {start_time(foreign.pid)}", f"{foreign.pid} 1"):
        # a bare pid (the old format), the process's true start time (a record fleet did not write
        # for it), and a start time that does not match (the pid was reused)
        stale.parent.mkdir(parents=True, exist_ok=True)
        stale.write_text(content + "\n")
        down = run_fleet(["down", "--all"], cwd=experiment, env={"FLEET_ISOLATION": isolation})
        assert down.returncode == 0, down.stderr
        assert "l-deadbeef-n0" in down.stdout + down.stderr        # the orphan directory was swept
        time.sleep(0.5)
        assert foreign.poll() is None, f"fleet down killed a foreign process named in {pid_file}: {content}"
        assert not machine.exists()


@pytest.mark.skipif(not HAS_CGROUP, reason="needs a writable cgroup v2 hierarchy (root)")
def test_a_setsid_env_stripped_double_forked_process_ends_at_release(experiment, fleet_home):
    marker = f"fleet-escape-{uuid.uuid4().hex[:8]}"
    proc = start_fleet_up(experiment, ["--", "sh", "-c", _escaping_command(marker)])
    try:
        wait_for_line(proc, "escaped", timeout=120)
        assert wait_until(lambda: _marked(marker), 30), "the escaping process never started"
        escaped = _marked(marker)
        leases = json.loads(run_fleet(["status", "--json"], cwd=experiment).stdout)["leases"]
        assert [m["isolation"] for lease in leases for m in lease["machines"]] == ["cgroup"]
        proc.send_signal(signal.SIGINT)           # the run ends; the lease is released
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert wait_until(lambda: not _marked(marker), 60), f"outlived its lease: {escaped}"
    assert not leftover_units(fleet_home / "machines")


@pytest.mark.skipif(not HAS_CGROUP, reason="needs a writable cgroup v2 hierarchy (root)")
def test_it_ends_at_the_deadline_when_the_controller_is_killed(experiment, fleet_home):
    marker = f"fleet-escape-{uuid.uuid4().hex[:8]}"
    proc = start_fleet_up(experiment, ["--", "sh", "-c", _escaping_command(marker)],
                          env={"FLEET_HEARTBEAT_TTL": "3"})
    try:
        wait_for_line(proc, "escaped", timeout=120)
        assert wait_until(lambda: _marked(marker), 30), "the escaping process never started"
    finally:
        proc.kill()                                # SIGKILL: nobody releases the lease
        proc.wait()
    assert wait_until(lambda: not _marked(marker), 90), "outlived the machine's deadline"
    assert wait_until(lambda: not processes_under(fleet_home), 30), processes_under(fleet_home)
    # The watchdog removed its unit itself, with no controller to do it.
    assert wait_until(lambda: not leftover_units(fleet_home / "machines"), 30)
    assert run_fleet(["down", "--all"], cwd=experiment).returncode == 0


def test_in_pids_mode_the_deadline_ends_the_machines_sshd(experiment, fleet_home):
    """With no cgroup the watchdog finds sshd through its pid file, and takes it only when the process
    names the machine's sshd_config: sshd's listener retitles itself into one string, which counts."""
    proc = start_fleet_up(experiment, ["--", "sh", "-c", "echo started; sleep 120"],
                          env={"FLEET_HEARTBEAT_TTL": "3", "FLEET_ISOLATION": "pids"})
    try:
        wait_for_line(proc, "started", timeout=120)
        assert any("sshd" in p for p in processes_under(fleet_home))
    finally:
        proc.kill()                                # SIGKILL: nobody releases the lease
        proc.wait()
    assert wait_until(lambda: not processes_under(fleet_home), 90), processes_under(fleet_home)
    assert run_fleet(["down", "--all"], cwd=experiment).returncode == 0
