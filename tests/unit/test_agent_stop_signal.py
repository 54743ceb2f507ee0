"""`stop` (every release) signals the machine's verified watchdog right after writing the release
file, instead of waiting up to one poll (0.5 s) for it to notice: the machine ends at once and its
`expired` record still says "released". A SIGTERM with no release file (Slurm ending the step, a
node's shutdown) stays "terminated"."""
from __future__ import annotations

import json
import signal
import subprocess
import sys

from fleet.remote.agent import AGENT_PATH
from tests.fixtures.watchdog import watchdog


def _long_watchdog(state):
    return watchdog(state, "m-stop", "--ttl", "300", "--max", "600")


def test_stop_ends_the_watchdog_now_and_it_records_a_release(tmp_path):
    state = tmp_path / "state"
    with _long_watchdog(state) as proc:
        done = subprocess.run([sys.executable, str(AGENT_PATH), "stop", "--state-dir", str(state),
                               "--machine-id", "m-stop", "--grace", "0.5"], capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert proc.wait(timeout=30) == 0
    assert json.loads((state / "expired").read_text())["reason"] == "released"


def test_a_sigterm_without_a_release_is_recorded_as_terminated(tmp_path):
    state = tmp_path / "state"
    with _long_watchdog(state) as proc:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert json.loads((state / "expired").read_text())["reason"] == "terminated"
