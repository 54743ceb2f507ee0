"""The terminal or pipe `fleet up` prints to goes away mid-run (red-team finding): a closed terminal
(SIGHUP, then EIO on every write), `fleet up | head` (EPIPE). A write raising there used to leave
the pipeline's cleanup half-way: no outputs fetched, the machines left to their deadline, the lease
`active` and the run `running`, no record. Now the run goes on silently: the machines are released
and the run is recorded."""
from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time

import pytest

from tests.conftest import FLEET, processes_under, run_fleet, wait_until

pytestmark = pytest.mark.timeout(180)

LOUD = "for i in $(seq 60); do echo line-$i; sleep 0.05; done"


def _settled(cwd, fleet_home) -> tuple[list, list]:
    leases = json.loads(run_fleet(["status", "--json"], cwd=cwd).stdout)["leases"]
    runs = json.loads(run_fleet(["runs", "ls", "--json"], cwd=cwd).stdout)["runs"]
    return leases, runs


def test_a_reader_leaving_the_pipe_still_releases_and_records(experiment, fleet_home):
    proc = subprocess.Popen([FLEET, "up", "-y", "--allow-dirty", "--", LOUD], cwd=experiment,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen = b""
    while b"line-3" not in seen:              # `| head`: a few lines, then the reader is gone
        chunk = proc.stdout.read1(4096)
        assert chunk, seen.decode(errors="replace")
        seen += chunk
    proc.stdout.close()
    proc.wait(timeout=120)
    leases, runs = _settled(experiment, fleet_home)
    assert leases == [], leases
    assert [r["status"] for r in runs] == ["succeeded"], runs
    assert wait_until(lambda: processes_under(fleet_home) == [], 10)


def test_a_closed_terminal_still_releases_and_records(experiment, fleet_home):
    pid, fd = pty.fork()
    if pid == 0:                               # fleet up on its own terminal, which then hangs up
        os.chdir(experiment)
        os.execv(FLEET, [FLEET, "up", "-y", "--allow-dirty", "--", LOUD])
    seen, end = b"", time.monotonic() + 60
    while b"line-3" not in seen and time.monotonic() < end:
        if select.select([fd], [], [], 0.5)[0]:
            try:
                seen += os.read(fd, 4096)
            except OSError:
                break
    os.close(fd)                               # the kernel sends SIGHUP; writes to the tty fail
    assert b"line-3" in seen, seen.decode(errors="replace")
    for _ in range(600):
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.2)
    else:
        os.kill(pid, 9)
        pytest.fail("fleet up did not end after its terminal closed")
    leases, runs = _settled(experiment, fleet_home)
    assert leases == [], leases
    assert [r["status"] for r in runs] == ["cancelled"], runs         # SIGHUP: stopped, then cleaned up
    assert wait_until(lambda: processes_under(fleet_home) == [], 10)
