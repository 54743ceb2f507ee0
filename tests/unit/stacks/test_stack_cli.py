"""`fleet stack …` without the pulumi CLI: one line saying how to install it, exit 3."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("op", ["up", "preview", "outputs"])
def test_missing_pulumi_cli_is_one_line_with_the_install_hint(op, tmp_path):
    env = {**os.environ, "FLEET_HOME": str(tmp_path), "PATH": str(tmp_path)}   # no pulumi on PATH
    out = subprocess.run([sys.executable, "-m", "fleet.cli.main", "stack", op], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 3
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("fleet: error: the pulumi CLI is not installed")
    assert "https://www.pulumi.com/docs/install/" in lines[0]
