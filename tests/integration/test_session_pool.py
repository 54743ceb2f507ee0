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
from tests.conftest import wait_until
from tests.fixtures.slurm import signal_all

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

        def use(i: int) -> None:   # five phases at once, each with a channel open for 2 s
            with connect(m) as s:
                lines.append((str(i), s.run("sleep 2; echo done").stdout.strip()))

        threads = [threading.Thread(target=use, args=(i,)) for i in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert pool.opened == 2                       # 3 channels on the first, 2 on the overflow
    assert sorted(lines) == [(str(i), "done") for i in range(5)]


def test_a_machines_agent_from_before_group_still_runs_and_stops_each_rank(local_lease):
    """A machine whose agent predates `agent group` (a warm pool or kept lease across a fleet
    upgrade): its ranks run under one `agent exec` each, as that agent knows, and a stop reaches
    every one of them (its `signal` reads one pid file per call)."""
    from fleet.remote.exec import signal_processes
    lease = local_lease(gpus=2)
    m = lease.machines[0]
    agent = m.agent_path
    source = open(agent).read()
    pre_group = ("import sys\n"
                 "if sys.argv[1:2] == ['group']:   # what argparse says, and its status\n"
                 "    sys.stderr.write(\"usage: fleet-agent\\nfleet-agent: error: argument cmd: invalid choice: "
                 "'group' (choose from 'watchdog', 'exec', 'signal')\\n\")\n"
                 "    sys.exit(2)\n"
                 "if sys.argv[1:2] == ['signal'] and sys.argv.count('--pidfile') > 1:\n"
                 "    sys.exit(\"fleet-agent: one pid file per call\")\n")
    future = "from __future__ import annotations\n"
    with open(agent, "w") as fh:
        fh.write(source.replace(future, future + pre_group, 1))
    lines = []
    with SessionPool([m]):
        wait_ready(m, timeout=20).close()
        specs = [ProcessSpec(m, str(i), f"trap 'echo stopped {i}; exit 5' TERM; echo up {i}; sleep 60 & wait", {},
                             m.workdir, f"{m.state_dir}/p{i}.pid") for i in range(2)]
        running = start_processes(specs, lambda label, stream, line: lines.append((label, line)))
        assert wait_until(lambda: {("0", "up 0"), ("1", "up 1")} <= set(lines), 60), lines
        signal_processes(running, "TERM")
        for p in running:
            assert p.done.wait(60)
    assert [p.result.exit_code for p in running] == [5, 5], ([p.result.error for p in running], lines)
    assert ("0", "stopped 0") in lines and ("1", "stopped 1") in lines, lines


def _sshd_sessions(listener: int) -> list[int]:
    """The listener's per-connection sshd processes (not the shells they run)."""
    found, todo = [], [listener]
    while todo:
        parent = todo.pop()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent and "sshd" in stat.split("(", 1)[1].split(")")[0]:
                found.append(int(entry))
                todo.append(int(entry))
    return found


def test_a_channel_slow_to_open_on_a_loaded_machine_does_not_cut_the_channels_in_flight(local_lease):
    """No answer to a channel open for 10 s while the machine still accepts TCP is a slow machine,
    not a cut link: the connection, and every channel on it (a sweep's neighbouring trials'
    checkpoint uploads), stays; the same open is given as long again. Closing it cut them all, each
    reporting "no answer"."""
    import signal
    import time
    from pathlib import Path
    m = local_lease().machines[0]
    listener = int((Path(m.workdir).parent / "sshd.pid").read_text().split()[0])
    got = {}
    with SessionPool([m]) as pool:
        wait_ready(m, timeout=20).close()

        def in_flight():
            with connect(m) as s:
                got["in flight"] = s.run("sleep 16; echo survived", timeout=60).stdout.strip()

        worker = threading.Thread(target=in_flight)
        worker.start()
        time.sleep(2)
        frozen = _sshd_sessions(listener)
        thaw = threading.Timer(12, signal_all, args=(frozen, signal.SIGCONT))
        try:
            assert frozen, "no sshd process serves the pooled connection"
            signal_all(frozen, signal.SIGSTOP)  # the connection's sshd is stalled; its listener is not
            thaw.start()
            began = time.monotonic()
            with connect(m) as s:
                got["second"] = s.run("echo second", timeout=60).stdout.strip()
            assert time.monotonic() - began >= 10
        finally:
            thaw.cancel()
            signal_all(frozen, signal.SIGCONT)
            worker.join(60)
        assert pool.opened == 1
    assert got == {"in flight": "survived", "second": "second"}
