"""The agent's `extend` (fleet/remote/agent/agent.py) run as it runs on a machine: a deadline only ever
moves later, never past the hard maximum, and never earlier (a shorter `fleet extend`, a heartbeat
capped by the budget). It is held on the machine's boot clock (boot_deadline), and said on its wall
clock (deadline) for whoever shows it."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from fleet.remote.agent import AGENT_PATH
from fleet.remote.agent.agent import BOOT_CLOCK


def extend(state: Path, ttl: float) -> tuple[int, float]:
    proc = subprocess.run([sys.executable, str(AGENT_PATH), "extend", "--state-dir", str(state), "--ttl", str(ttl)],
                          capture_output=True, text=True, timeout=60)
    deadline = float((state / "boot_deadline").read_text())
    return proc.returncode, deadline


def held(state: Path, deadline_in: float, max_in: float) -> Path:
    state.mkdir()
    now = time.clock_gettime(BOOT_CLOCK)
    (state / "boot_deadline").write_text(repr(now + deadline_in))
    (state / "boot_max_deadline").write_text(repr(now + max_in))
    return state


def test_a_shorter_extend_keeps_the_later_deadline(tmp_path):
    state = held(tmp_path / "s", deadline_in=600, max_in=3600)
    before = float((state / "boot_deadline").read_text())
    rc, after = extend(state, 30)
    assert rc == 0 and after == before


def test_a_longer_extend_moves_it_later_but_never_past_the_maximum(tmp_path):
    state = held(tmp_path / "s", deadline_in=60, max_in=900)
    rc, after = extend(state, 300)
    assert rc == 0 and 250 < after - time.clock_gettime(BOOT_CLOCK) <= 300
    assert 250 < float((state / "deadline").read_text()) - time.time() <= 300
    rc, capped = extend(state, 7200)
    cap = float((state / "boot_max_deadline").read_text())
    assert rc == 0 and capped == cap


def test_it_reports_what_the_machine_now_holds(tmp_path):
    state = held(tmp_path / "s", deadline_in=600, max_in=3600)
    proc = subprocess.run([sys.executable, str(AGENT_PATH), "extend", "--state-dir", str(state), "--ttl", "10"],
                          capture_output=True, text=True, timeout=60)
    assert json.loads(proc.stdout)["remaining_s"] > 500


def test_an_expired_machine_is_not_revived(tmp_path):
    state = held(tmp_path / "s", deadline_in=-5, max_in=3600)
    (state / "expired").write_text(json.dumps({"reason": "deadline"}))
    rc, _ = extend(state, 300)
    assert rc == 3
