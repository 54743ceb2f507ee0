"""`fleet down LEASE` while `fleet up` is still making that lease's machines (red-team finding): the
machines made after the down ran on to their deadline while `fleet status` said "no live leases",
and `fleet up` waited out the 120 s ready timeout to fail on a missing key. Now no machine is made
once the lease is released, the run ends at once saying why, and nothing is left running."""
from __future__ import annotations

import subprocess
import time

import pytest

from fleet.state import open_state
from tests.conftest import FLEET, processes_under, run_fleet, wait_until

pytestmark = pytest.mark.timeout(240)


def _leasing() -> str | None:
    state = open_state()
    try:
        rows = state.db.execute("SELECT id FROM leases WHERE status = 'leasing'")
        return rows[0]["id"] if rows else None
    finally:
        state.close()


def test_down_during_leasing_ends_the_run_and_leaves_no_machine(experiment, fleet_home):
    up = subprocess.Popen([FLEET, "up", "-y", "--allow-dirty", "-t", "local-1gpu", "--gpus", "24", "--", "true"],
                          cwd=experiment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: _leasing() is not None or up.poll() is not None, 60, 0.02)
        lease = _leasing()
        assert lease is not None, up.communicate()[1][-2000:]
        started = time.monotonic()
        down = run_fleet(["down", lease], cwd=experiment)
        assert down.returncode == 0, down.stderr
        _, err = up.communicate(timeout=90)
        assert time.monotonic() - started < 60, err[-2000:]           # not the 120 s ready timeout
        assert up.returncode != 0 and "released" in err, err[-2000:]
        assert wait_until(lambda: processes_under(fleet_home) == [], 30), processes_under(fleet_home)
        assert "no live leases" in run_fleet(["status"], cwd=experiment).stdout
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        run_fleet(["down", "--all"], cwd=experiment)
