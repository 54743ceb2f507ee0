"""The watchdog ends its machine at the hard maximum it was started with, whatever the state
directory says: the machine's login owns that directory, and a deadline written there far in the
future (the experiment, or anything running as that login) kept the machine up past max_duration,
with no controller needed to extend it (on AWS, billed until the reaper came)."""
from __future__ import annotations

import json
import subprocess
import sys
import time

from fleet.remote.agent import AGENT_PATH


def test_a_deadline_written_past_the_maximum_does_not_keep_the_machine_up(tmp_path):
    state = tmp_path / "state"
    proc = subprocess.Popen([sys.executable, str(AGENT_PATH), "watchdog", "--state-dir", str(state),
                             "--machine-id", "m-hardmax", "--ttl", "1", "--max", "2", "--isolation", "pids"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 30
        while not (state / "watchdog.pid").exists() and time.monotonic() < end:
            time.sleep(0.05)
        # What the login can do: a deadline (and a cap) a day away.
        far = repr(time.time() + 86400)
        for name in ("deadline", "max_deadline"):
            (state / name).write_text(far)
        assert proc.wait(timeout=30) == 0, "the watchdog outlived its --max"
        assert json.loads((state / "expired").read_text())["reason"] == "deadline"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
