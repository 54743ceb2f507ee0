"""Two FLEET_HOMEs at one path on one host (two containers sharing the host's cgroup hierarchy, each
with FLEET_HOME=/root/.fleet) each own their machines' cgroup units: `fleet down --all` in one swept
the other's running machines as orphans, their units being named by the path alone."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from fleet.remote.agent.containment import cgroup2_mount

ROOT_WITH_CGROUP = bool(cgroup2_mount()) and os.geteuid() == 0 and bool(shutil.which("unshare"))


@pytest.mark.skipif(not ROOT_WITH_CGROUP, reason="needs root (a mount namespace) and a writable cgroup v2")
def test_down_all_of_another_home_at_the_same_path_leaves_this_homes_machines(local_lease, fleet_home, tmp_path):
    from fleet.providers.local import LocalProvider
    lease = local_lease()
    other = tmp_path / "other-container-home"
    other.mkdir()
    # The other container: its own FLEET_HOME directory, mounted at this one's path.
    swept = subprocess.run(["unshare", "-m", "sh", "-c", 'mount --bind "$1" "$2" && shift 2 && exec "$@"', "_",
                            str(other), str(fleet_home), sys.executable, "-m", "fleet", "down", "--all"],
                           capture_output=True, text=True, timeout=60)
    assert swept.returncode == 0, swept.stderr
    assert "orphan" not in swept.stderr and lease.machines[0].id not in swept.stdout
    assert [s.state for s in LocalProvider().describe(lease)] == ["running"]
