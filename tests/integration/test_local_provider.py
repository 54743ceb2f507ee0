"""The local provider with real sshd machines: reachability, pinning, deadlines, release."""
from __future__ import annotations

import dataclasses
import os
import signal
import time
from pathlib import Path

import pytest

from fleet.errors import InfrastructureError, MachineUnreachable
from fleet.heartbeat import Heartbeat
from fleet.isolation import leftover_units
from fleet.keys import generate_ed25519
from fleet.providers.local import LocalProvider
from fleet.providers.local.sshd import pid_alive
from fleet.remote.agent.agent import BOOT_CLOCK
from fleet.remote.ssh import connect, wait_ready
from tests.conftest import processes_under, wait_until


def test_leased_machines_answer_ssh_with_their_own_root_and_gpu_slots(local_lease, fleet_home):
    lease = local_lease(gpus=8, template="local-4gpu")
    assert [m.node_rank for m in lease.machines] == [0, 1]
    assert all(m.gpu_slots == (0, 1, 2, 3) for m in lease.machines)
    assert len({m.port for m in lease.machines}) == 2
    for m in lease.machines:
        assert Path(m.workdir).is_relative_to(fleet_home / "machines" / m.id)
        with wait_ready(m, timeout=20) as s:
            out = s.run("echo $FLEET_MACHINE_ID; pwd", cwd=m.workdir).stdout.split()
        assert out == [m.id, m.workdir]
    assert oct(os.stat(lease.machines[0].key_path).st_mode & 0o777) == "0o600"


def test_a_wrong_host_key_is_refused(local_lease, tmp_path):
    lease = local_lease()
    impostor = generate_ed25519(tmp_path / "other")
    machine = dataclasses.replace(lease.machines[0], host_key=impostor)
    with pytest.raises(InfrastructureError, match="host key"):
        connect(machine)


def test_release_ends_processes_removes_files_and_is_idempotent(local_lease, fleet_home):
    lease = local_lease(gpus=2)
    m = lease.machines[0]
    with wait_ready(m, 20) as s:
        s.run("nohup setsid sleep 300 >/dev/null 2>&1 &")
    assert wait_until(lambda: any("sleep 300" in p for p in _tagged(m.id)), 5)
    provider = LocalProvider()
    provider.release(lease)
    assert _tagged(m.id) == []
    assert not (fleet_home / "machines" / m.id).exists()
    assert not Path(m.key_path).exists()
    assert [s.state for s in provider.describe(lease)] == ["gone", "gone"]
    provider.release(lease)   # idempotent


def test_watchdog_ends_the_machine_at_its_deadline_without_the_controller(local_lease, fleet_home):
    lease = local_lease(deadline_s=300)
    m = lease.machines[0]
    # The deadline (the file the watchdog reads) is brought to now only once the process runs: a
    # 2 s lease on a loaded machine could expire before the test's own session had started it.
    with wait_ready(m, 60) as s:
        s.run("nohup setsid sleep 300 >/dev/null 2>&1 &")
    (Path(m.state_dir) / "boot_deadline").write_text(repr(time.clock_gettime(BOOT_CLOCK)))
    sshd_pid = m.provider_ref["sshd_pid"]
    # Outcomes, with bounds generous enough for a machine whose cores are all busy: the watchdog
    # ends the whole machine (its cgroup unit at once, or each verified/tagged pid) and says so.
    state = fleet_home / "machines" / m.id / "root" / ".fleet"
    assert wait_until(lambda: (state / "expired").exists(), 60), "the watchdog never expired"
    assert wait_until(lambda: not pid_alive(sshd_pid), 60), "sshd outlived its deadline"
    assert wait_until(lambda: _tagged(m.id) == [], 60), _tagged(m.id)
    assert wait_until(lambda: not leftover_units(fleet_home / "machines"), 60), "the machine's cgroup was left"
    assert [s.state for s in LocalProvider().describe(lease)] == ["gone"]
    with pytest.raises(MachineUnreachable):
        connect(m, timeout=2)


def test_heartbeat_keeps_machines_alive_past_the_first_deadline(local_lease):
    lease = local_lease(gpus=2, deadline_s=2)
    for m in lease.machines:
        wait_ready(m, 20).close()
    beat = Heartbeat(lease, ttl_s=2).start()
    try:
        time.sleep(4)
        assert all(s.state == "running" for s in LocalProvider().describe(lease))
    finally:
        beat.stop()
    assert beat.beats >= 2


def test_extend_never_passes_the_hard_maximum(local_lease):
    lease = local_lease(deadline_s=5, max_s=3)
    m = lease.machines[0]
    with wait_ready(m, 20) as s:
        out = s.run([m.python, m.agent_path, "extend", "--state-dir", m.state_dir, "--ttl", "3600"]).stdout
    import json
    assert json.loads(out)["remaining_s"] <= 3


def test_a_machine_that_never_answers_is_named(local_lease):
    lease = local_lease()
    m = lease.machines[0]
    os.kill(m.provider_ref["sshd_pid"], signal.SIGSTOP)
    try:
        with pytest.raises(MachineUnreachable, match=m.id):
            wait_ready(m, timeout=2)
    finally:
        os.kill(m.provider_ref["sshd_pid"], signal.SIGCONT)


def _tagged(machine_id: str) -> list[str]:
    from fleet.remote.agent import containment
    out = []
    for pid, _start in containment.tagged(machine_id, exclude={os.getpid()}):
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            pass
    return out


def test_a_sweep_ends_a_cgroup_unit_whose_machine_directory_is_gone(fleet_home):
    """Red-team finding: a unit whose machine directory was removed (its watchdog SIGKILLed, then the
    directory deleted) was never ended or removed: `isolation.sweep_units` was called nowhere.
    `fleet down --all`'s sweep ends such a unit, and never one of a live lease."""
    import subprocess

    from fleet.isolation import existing_unit, prepare_local_unit
    from fleet.paths import subdir
    from fleet.providers.local import LocalProvider
    root = subdir("machines")
    gone, live = root / "l-0dead000-n0", root / "l-0a1ive0-n0"
    made = []
    for d in (gone, live):
        d.mkdir()
        unit = prepare_local_unit(d)
        if unit is None:
            pytest.skip("no writable cgroup v2 here")
        proc = subprocess.Popen(["sleep", "300"])
        with open(os.path.join(unit, "work", "cgroup.procs"), "w") as fh:
            fh.write(str(proc.pid))
        made.append(proc)
    gone.rmdir()
    live.rmdir()                       # a live lease's machine still being made: no directory yet
    try:
        swept = LocalProvider().sweep({"l-0a1ive0"})
        assert swept == ["l-0dead000-n0"]
        assert made[0].wait(10) is not None and existing_unit(gone) is None
        assert made[1].poll() is None and existing_unit(live) is not None
    finally:
        for p in made:
            p.kill()
            p.wait()
        from fleet.providers.local.provider import _end_orphan_unit
        _end_orphan_unit(live)
