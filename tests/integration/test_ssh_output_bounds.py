"""Session.run's bounds for commands whose output the experiment can influence, on a real sshd
machine: a command printing past `max_output_bytes` and one running past `deadline_s` each end
the read with one line naming the machine, and the connection stays usable; the environment probe
(run by the lease's venv `python`, which a setup can replace) is read under both bounds."""
from __future__ import annotations

import time

import pytest

from fleet.environment import capture
from fleet.errors import InfrastructureError
from fleet.lease_prepare import PYTHON_ENV
from fleet.remote.ssh import CommandTimedOut, OutputLimitExceeded, connect, wait_ready


def test_output_past_the_cap_is_one_line_and_the_session_goes_on(local_lease):
    m = local_lease().machines[0]
    with wait_ready(m, timeout=30) as s:
        started = time.monotonic()
        with pytest.raises(OutputLimitExceeded) as caught:
            s.run("yes", check=False, max_output_bytes=1 << 20, deadline_s=60)   # prints without end
        assert time.monotonic() - started < 30
        line = str(caught.value)
        assert "\n" not in line and m.id in line and "`yes` printed more than 1 MiB" in line
        assert s.run("echo still here").stdout.strip() == "still here"


def test_a_command_past_its_deadline_is_one_line(local_lease):
    m = local_lease().machines[0]
    with wait_ready(m, timeout=30) as s:
        started = time.monotonic()
        with pytest.raises(CommandTimedOut) as caught:
            # Silent, then printing: neither the per-read timeout nor a flowing output ends it.
            s.run("sleep 1; while :; do echo tick; sleep 0.1; done", check=False, deadline_s=3)
        assert time.monotonic() - started < 30
        assert "\n" not in str(caught.value) and "did not finish in 3s" in str(caught.value)


def test_output_under_the_cap_is_read_whole(local_lease):
    m = local_lease().machines[0]
    with wait_ready(m, timeout=30) as s:
        got = s.run("head -c 500000 /dev/zero | tr '\\0' x", max_output_bytes=1 << 20, deadline_s=60)
    assert got.stdout == "x" * 500000


def _fake_venv(lease, machine, script: str):
    """The lease's venv, its `python` replaced by `script` (as an experiment's setup could)."""
    with connect(machine) as s:
        venv = f"{machine.workdir}/fake-venv"
        s.run(["mkdir", "-p", f"{venv}/bin"])
        s.run(["sh", "-c", f"cat > {venv}/bin/python && chmod +x {venv}/bin/python"],
              stdin=script.encode())
    lease.meta[PYTHON_ENV] = {machine.id: {"dir": venv}}


def test_a_venv_python_that_prints_too_much_fails_the_probe_in_one_line(local_lease):
    lease = local_lease()
    m = lease.machines[0]
    wait_ready(m, timeout=30).close()
    # 64 MiB on one line, then exit 0 (bounded, so that without the cap this test still ends).
    _fake_venv(lease, m, "#!/bin/sh\nhead -c 67108864 /dev/zero | tr '\\0' x\n")
    with pytest.raises(InfrastructureError) as caught:
        capture.run_probe(lease, m, "probe", m.workdir)
    line = str(caught.value)
    assert "\n" not in line
    assert f"could not read the environment of {m.id}" in line and "printed more than 16 MiB" in line


def test_a_venv_python_that_never_ends_fails_the_probe_at_its_deadline(local_lease):
    lease = local_lease()
    m = lease.machines[0]
    wait_ready(m, timeout=30).close()
    _fake_venv(lease, m, "#!/bin/sh\nwhile :; do sleep 0.2; done\n")
    started = time.monotonic()
    with pytest.raises(InfrastructureError, match="did not finish in 2s"):
        capture.run_probe(lease, m, "probe", m.workdir, deadline_s=2)
    assert time.monotonic() - started < 60
