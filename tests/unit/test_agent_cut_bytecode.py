"""A machine's disk full at lease start: the import system writes the agent's modules' byte code without
checking the write, so a .pyc cut short was renamed into place, and every later agent call (each
heartbeat) failed on `marshal data too short` until the watchdog ended the machine (red-team finding)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from fleet.remote.agent import AGENT_FILES


def _status(here: Path, state: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}   # as sshd starts it
    return subprocess.run([sys.executable, str(here / "agent.py"), "status", "--state-dir", str(state)],
                          capture_output=True, text=True, timeout=60, env=env)


def test_a_byte_code_file_cut_short_is_compiled_again_from_source(tmp_path):
    here, state = tmp_path / "agent", tmp_path / "state"
    here.mkdir()
    state.mkdir()
    for path in AGENT_FILES:
        shutil.copy(path, here / path.name)
    first = _status(here, state)
    assert first.returncode == 0, first.stderr
    cut = list((here / "__pycache__").glob("containment.*.pyc"))
    assert cut, "the first call wrote no byte code to cut"
    cut[0].write_bytes(cut[0].read_bytes()[:40])
    again = _status(here, state)
    assert again.returncode == 0 and "marshal" not in again.stderr, again.stderr
    assert json.loads(again.stdout)["expired"] is False
    later = _status(here, state)       # and the calls after it, byte code written afresh
    assert later.returncode == 0, later.stderr
    assert list((here / "__pycache__").glob("containment.*.pyc"))


def test_the_single_file_agent_still_embeds_its_modules():
    from fleet.remote.agent import agent_source
    source = agent_source()
    assert "_beside(\"containment\")" not in source and "containment = _types.ModuleType('containment')" in source
    compile(source, "agent.py", "exec")
