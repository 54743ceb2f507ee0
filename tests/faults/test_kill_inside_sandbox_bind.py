"""SIGKILL of the controller inside the AWS sandbox's `Sandbox.bind`: whatever it had started by then
must still end at the machine's deadline. sshd used to start before its watchdog, so a controller
killed between the two left an sshd listening with the lease key authorized and no deadline."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, processes_under, wait_until

pytestmark = pytest.mark.timeout(120)
DEADLINE_S = 3

# The controller: binds one instance with a short deadline and SIGKILLs itself right after `point`
# (a function of fleet.providers.local.sshd) returns, i.e. with that process started and nothing after it.
DRIVER = r"""
import json, os, signal, sys
from pathlib import Path
import fleet.providers.local.sshd as sshd
from fleet.keys import generate_ed25519
from fleet.providers.aws.sandbox import Sandbox
root, point = Path(sys.argv[1]), sys.argv[2]
lease_key, host_key = root / "lease" / "id_ed25519", root / "lease" / "host_ed25519"
generate_ed25519(lease_key)
host_pub = generate_ed25519(host_key)
real = getattr(sshd, point)
def killed_after(*args, **kwargs):
    started = real(*args, **kwargs)
    port = getattr(started, "port", None)
    (root / "reached").write_text(json.dumps({"point": point, "port": port}))
    os.kill(os.getpid(), signal.SIGKILL)
setattr(sshd, point, killed_after)
Sandbox(root / "machines").bind("i-0abc", "l-killed", lease_key, host_key, host_pub, deadline_s=%d, max_s=60)
""" % DEADLINE_S


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("point", ["start_sshd", "start_watchdog"])
def test_controller_killed_inside_bind_leaves_nothing_past_the_deadline(tmp_path, fleet_home, point):
    root = tmp_path / "sandbox"
    root.mkdir()
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(root), point], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr                 # it really died inside bind
    reached = json.loads((root / "reached").read_text())
    machine = root / "machines" / "i-0abc"
    assert not (machine / "binding.json").exists()           # never bound: nothing would connect to it
    if point == "start_sshd":
        assert _listening(reached["port"])                   # the sshd it left is really there, for now
    started = time.monotonic()
    # The machine's own watchdog ends everything at the deadline, with no controller.
    gone = wait_until(lambda: not processes_under(machine), timeout=DEADLINE_S + 45, interval=0.2)
    assert gone, f"still running {time.monotonic() - started:.0f}s later: {processes_under(machine)}"
    if reached["port"]:
        assert not _listening(reached["port"])
