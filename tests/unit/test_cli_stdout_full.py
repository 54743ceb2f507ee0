"""Standard output that is full (`> /dev/full`, or a file on a full disk) is named as the place that
is full: the error blamed FLEET_HOME and the current directory ("free space there") while both had
gigabytes free."""
from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import FLEET


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("args", [["status", "--json"], ["config", "schema"]], ids=["status", "schema"])
def test_a_full_stdout_is_named_not_fleet_home(experiment, fleet_home, args):
    with open("/dev/full", "w") as full:
        proc = subprocess.run([FLEET, *args], cwd=experiment, stdout=full, stderr=subprocess.PIPE, text=True,
                              timeout=30)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("fleet: error:"), proc.stderr
    assert "standard output" in lines[0] and "/dev/full" in lines[0], lines[0]
    assert "FLEET_HOME" not in lines[0], lines[0]
