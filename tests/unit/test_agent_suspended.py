"""A watchdog stopped for longer than its heartbeat TTL (Slurm suspends a job by stopping every process
of it, the watchdog and sshd among them, so no heartbeat reaches it) gives its controller one heartbeat
window from the wake-up before ending the machine for the deadline that passed meanwhile: it ended the
machine at once at resume, and the run Slurm kept through the suspension was lost after all. With no
controller to beat, the machine still ends by then; the hard maximum still ends it at once."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from fleet.remote.agent import AGENT_PATH
from tests.fixtures.watchdog import watchdog

TTL_S = 3.0
STOPPED_S = 8.0   # longer than the TTL, and than the gap that tells the watchdog it was stopped


def suspend(proc: subprocess.Popen, seconds: float) -> float:
    """SIGSTOP the watchdog for `seconds`, as Slurm's suspension does; returns time.monotonic() at resume."""
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    return time.monotonic()


def extend(state, ttl_s: float) -> None:
    subprocess.run([sys.executable, str(AGENT_PATH), "extend", "--state-dir", str(state), "--ttl", str(ttl_s)],
                   check=True, capture_output=True, timeout=30)


def test_a_suspension_past_the_ttl_waits_for_the_controllers_next_heartbeat(tmp_path):
    state = tmp_path / "state"
    with watchdog(state, "m-suspended", "--ttl", str(TTL_S), "--max", "3600") as proc:
        resumed = suspend(proc, STOPPED_S)
        time.sleep(1.0)           # the heartbeat after the resume comes a moment later
        assert proc.poll() is None, "the watchdog ended the machine at resume, before any heartbeat could come"
        assert not (state / "expired").exists()
        extend(state, 60)         # the live controller's beat
        time.sleep(max(0.0, resumed + TTL_S + 1.5 - time.monotonic()))   # past the window the resume gave
        assert proc.poll() is None, "the heartbeat after the resume did not keep the machine"
        assert json.loads(subprocess.run(
            [sys.executable, str(AGENT_PATH), "status", "--state-dir", str(state)],
            capture_output=True, text=True, timeout=30).stdout)["remaining_s"] > 0


def test_with_no_heartbeat_after_the_suspension_the_machine_ends_within_a_ttl(tmp_path):
    state = tmp_path / "state"
    with watchdog(state, "m-no-controller", "--ttl", str(TTL_S), "--max", "3600") as proc:
        resumed = suspend(proc, STOPPED_S)
        assert proc.wait(timeout=30) == 0
        waited = time.monotonic() - resumed
        assert waited >= TTL_S - 0.5, "the watchdog gave the controller no time to beat after the resume"
        assert waited < TTL_S + 5, "the watchdog kept a machine whose controller is gone past one TTL"
        assert json.loads((state / "expired").read_text())["reason"] == "deadline"


def test_a_suspension_past_the_hard_maximum_ends_the_machine_at_resume(tmp_path):
    state = tmp_path / "state"
    with watchdog(state, "m-past-max", "--ttl", str(TTL_S), "--max", "4") as proc:
        resumed = suspend(proc, STOPPED_S)
        assert proc.wait(timeout=30) == 0
        assert time.monotonic() - resumed < 2.0, "the hard maximum waited for a heartbeat after the resume"
        assert json.loads((state / "expired").read_text())["reason"] == "deadline"
