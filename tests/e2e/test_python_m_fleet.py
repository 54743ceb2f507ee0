"""`python -m fleet` runs the CLI, as `python -m pip` does: for a venv whose bin/ is not on PATH."""
from __future__ import annotations

import subprocess
import sys


def test_python_m_fleet_is_the_fleet_command():
    got = subprocess.run([sys.executable, "-m", "fleet", "--help"], capture_output=True, text=True, timeout=60)
    assert got.returncode == 0 and "Usage: fleet" in got.stdout, got.stderr
    bad = subprocess.run([sys.executable, "-m", "fleet", "nosuchcommand"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
