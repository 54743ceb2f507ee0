"""fleet/remote/pool.py against real sshd machines: one connection per machine shared by every
caller, an overflow connection only where sshd caps the channels of one connection (MaxSessions),
a dead connection replaced on next use, and nothing pooled once the pool is closed."""
from __future__ import annotations

import os
import shutil
import threading

import pytest

from fleet.remote.exec import ProcessSpec, start_processes
from fleet.remote.pool import SessionPool, pool_for
from fleet.remote.ssh import connect, wait_ready

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def test_every_caller_shares_one_connection_per_machine(local_lease):
    lease = local_lease(gpus=2)
    with SessionPool(lease.machines) as pool:
        for m in lease.machines:
            wait_ready(m, timeout=20).close()
        outs = []

        def use(m):
            with connect(m) as s:                     # what every phase does
                outs.append(s.run("echo $FLEET_MACHINE_ID").stdout.strip())
                with s.sftp() as sftp:
                    sftp.listdir(m.workdir)

        threads = [threading.Thread(target=use, args=(m,)) for m in lease.machines for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(outs) == sorted([m.id for m in lease.machines] * 5)
        assert pool.opened == 2
    assert all(pool_for(m.id) is None for m in lease.machines)
    with connect(lease.machines[0]) as own:            # after the pool: a connection of its own
        assert own.run("true").exit_code == 0


def test_a_dead_connection_is_replaced_on_next_use(local_lease):
    lease = local_lease()
    m = lease.machines[0]
    with SessionPool([m]) as pool:
        first = connect(m)
        first.run("true")
        pool.primary(m).client.close()               # the link drops under the run
        assert connect(m).run("echo again").stdout.strip() == "again"
        assert first.run("echo old handle").stdout.strip() == "old handle"
        assert pool.opened == 2


@pytest.mark.skipif(not os.access(SSHD, os.X_OK), reason="needs OpenSSH's sshd")
def test_channels_beyond_sshds_max_sessions_go_to_one_overflow_connection(local_lease, tmp_path, monkeypatch):
    wrapper = tmp_path / "sshd-capped"
    wrapper.write_text(f'#!/bin/sh\nexec {SSHD} "$@" -o MaxSessions=3\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("FLEET_SSHD", str(wrapper))
    lease = local_lease()
    m = lease.machines[0]
    lines = []
    with SessionPool([m]) as pool:
        wait_ready(m, timeout=20).close()
        specs = [ProcessSpec(m, str(i), "sleep 2; echo done", {}, m.workdir, f"{m.state_dir}/p{i}.pid")
                 for i in range(5)]
        running = start_processes(specs, lambda label, stream, line: lines.append((label, line)))
        for p in running:
            assert p.done.wait(60)
        assert [p.result.exit_code for p in running] == [0] * 5, [p.result.error for p in running]
        assert pool.opened == 2                       # 3 channels on the first, 2 on the overflow
    assert sorted(lines) == [(str(i), "done") for i in range(5)]
