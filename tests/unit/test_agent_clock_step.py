"""The watchdog ends its machine at its deadline and at its hard maximum however the machine's wall
clock steps: held as wall-clock times, a clock stepped back (NTP correcting a clock that ran ahead, a
user's `date -s`) kept the machine up past them by the size of the step (a day here), with no
controller needed to extend it, and a clock stepped forward ended a machine its controller still
kept alive before its time."""
from __future__ import annotations

import json
import subprocess
import sys
import time

from fleet.remote.agent import AGENT_PATH

# The agent run as on a machine, its wall clock stepped by STEP seconds 0.3 s after it started.
STEPPED = """
import os, runpy, sys, time
real, start = time.time, time.time()
time.time = lambda: real() + (STEP if real() - start > 0.3 else 0)
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(sys.argv[0]))
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def stepped_watchdog(state, machine_id: str, step_s: float, ttl: float, max_s: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", STEPPED.replace("STEP", repr(step_s)), str(AGENT_PATH), "watchdog",
                             "--state-dir", str(state), "--machine-id", machine_id, "--ttl", str(ttl),
                             "--max", str(max_s), "--isolation", "pids"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def ended(proc: subprocess.Popen, timeout: float) -> bool:
    try:
        return proc.wait(timeout=timeout) == 0
    except subprocess.TimeoutExpired:
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_wall_clock_stepped_back_does_not_keep_the_machine_past_its_maximum(tmp_path):
    state = tmp_path / "state"
    proc = stepped_watchdog(state, "m-stepped", -86400, ttl=1, max_s=2)
    assert ended(proc, 8), "the watchdog outlived its --max by the clock's step"
    assert (state / "expired").exists()


def test_a_wall_clock_stepped_back_does_not_keep_the_machine_past_its_deadline(tmp_path):
    # No heartbeat comes (the controller is gone): the machine ends at the deadline it was given, not
    # at its maximum an hour away, nor a day after the deadline.
    state = tmp_path / "state"
    proc = stepped_watchdog(state, "m-back", -86400, ttl=1, max_s=3600)
    assert ended(proc, 20), "the watchdog outlived its heartbeat deadline by the clock's step"
    assert json.loads((state / "expired").read_text())["reason"] == "deadline"


def test_a_wall_clock_stepped_forward_does_not_end_the_machine_before_its_deadline(tmp_path):
    state = tmp_path / "state"
    started = time.monotonic()
    proc = stepped_watchdog(state, "m-forward", 86400, ttl=4, max_s=3600)
    assert ended(proc, 30)
    # The watchdog fixes its deadline after it started, so never sooner than 4 s after this.
    assert time.monotonic() - started >= 4, "the clock's step ended the machine before its deadline"
    assert json.loads((state / "expired").read_text())["reason"] == "deadline"
