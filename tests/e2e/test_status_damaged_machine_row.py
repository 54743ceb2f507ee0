"""One damaged machine row (a hand edit, disk trouble) shows that lease as damaged in `fleet status`;
every other lease is listed as before (red-team finding: the whole status failed with one line that
named no row, and no lease was shown at all)."""
from __future__ import annotations

import json

import pytest

from fleet.state import open_state
from tests.conftest import run_fleet

pytestmark = pytest.mark.timeout(180)


def test_a_damaged_machine_row_marks_its_lease_and_leaves_the_others_listed(experiment, fleet_home):
    leases = []
    for gpus in ("1", "2"):
        up = run_fleet(["up", "-y", "--allow-dirty", "--json", "--gpus", gpus, "--keep", "2m", "--", "true"],
                       cwd=experiment)
        assert up.returncode == 0, up.stderr
        leases.append(json.loads(up.stdout)["lease_id"])
    state = open_state()
    try:
        kept = state.db.execute("SELECT data FROM machines WHERE id = ?", (f"{leases[1]}-n1",))[0]["data"]
        state.db.execute("UPDATE machines SET data = '{garbage' WHERE id = ?", (f"{leases[1]}-n1",))
        try:
            for argv in (["status"], ["status", "--json"]):
                proc = run_fleet(argv, cwd=experiment)
                assert proc.returncode == 0, proc.stderr
            views = {v["id"]: v for v in json.loads(proc.stdout)["leases"]}
            assert views[leases[0]]["health"] == "up" and len(views[leases[0]]["machines"]) == 1
            assert views[leases[1]]["health"] == "damaged"
        finally:
            state.db.execute("UPDATE machines SET data = ? WHERE id = ?", (kept, f"{leases[1]}-n1"))
    finally:
        state.close()
        assert run_fleet(["down", "--all"], cwd=experiment).returncode == 0
