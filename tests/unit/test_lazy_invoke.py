"""fleet/remote/lazy_invoke.py: opening SSH does not pay for invoke, and paramiko's `Match exec`
(the one thing it imports invoke for) still runs its command."""
from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = r"""
import sys
import fleet.remote.ssh, paramiko
assert "invoke.vendor.yaml" not in sys.modules and "unittest.mock" not in sys.modules, "invoke was imported"
matched = paramiko.SSHConfig.from_text('Match exec "true"\n  User matched\n').lookup("h").get("user")
missed = paramiko.SSHConfig.from_text('Match exec "false"\n  User matched\n').lookup("h").get("user")
print(matched, missed, type(sys.modules["invoke"]).__name__)
"""


def test_invoke_is_loaded_only_when_a_match_exec_line_needs_it():
    pytest.importorskip("invoke")
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    # the real module replaced the stand-in when `Match exec` used it
    assert out.stdout.split() == ["matched", "None", "module"]
