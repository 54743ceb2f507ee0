"""The watchdog ends its machine at its hard maximum however the machine's wall clock steps: the
maximum was held as a wall-clock time, so a clock stepped back (NTP correcting a clock that ran
ahead, a user's `date -s`) kept the machine up past max_duration by the size of the step (a day here),
with no controller needed to extend it."""
from __future__ import annotations

import subprocess
import sys

from fleet.remote.agent import AGENT_PATH

# The agent run as on a machine, its wall clock stepped back a day 0.3 s after it started.
STEPPED = """
import os, runpy, sys, time
real, start = time.time, time.time()
time.time = lambda: real() - (86400 if real() - start > 0.3 else 0)
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(sys.argv[0]))
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_a_wall_clock_stepped_back_does_not_keep_the_machine_past_its_maximum(tmp_path):
    state = tmp_path / "state"
    proc = subprocess.Popen([sys.executable, "-c", STEPPED, str(AGENT_PATH), "watchdog", "--state-dir", str(state),
                             "--machine-id", "m-stepped", "--ttl", "1", "--max", "2", "--isolation", "pids"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert proc.wait(timeout=8) == 0, "the watchdog outlived its --max"
    except subprocess.TimeoutExpired:
        raise AssertionError("the watchdog outlived its --max by the clock's step") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (state / "expired").exists()
