"""A run whose meta records a `controller` that is not an identity (a teammate's client, a hand
edit: `"controller": 5`) in the shared state: `fleet down` still ends the runs whose controller is
gone, that one included, instead of stopping at it with "'int' object has no attribute 'get'" and
leaving every later run of the team marked running."""
from __future__ import annotations

import json

import pytest

from tests.conftest import run_fleet
from tests.unit.test_state_damaged_rows import _seed


@pytest.fixture
def state(fleet_home):
    from fleet.state import open_state
    s = open_state()
    _seed(s, "l-bobs-0001", "r-bobs-0001", user="bob")
    _seed(s, "l-mine-0002", "r-mine-0002")
    s.db.execute("UPDATE runs SET meta = ? WHERE id = 'r-bobs-0001'", (json.dumps({"detached": True, "controller": 5}),))
    # Mine: recorded from another computer (no identity this one can check), so gone once its lease is.
    s.db.execute("UPDATE runs SET meta = ? WHERE id = 'r-mine-0002'", (json.dumps({"detached": True}),))
    s.db.execute("UPDATE runs SET started_at = '2000-01-01T00:00:00+00:00' WHERE id = 'r-bobs-0001'")
    yield s
    s.close()


def _status(state, run_id: str) -> str:
    return state.db.execute("SELECT status FROM runs WHERE id = ?", (run_id,))[0]["status"]


def test_down_all_ends_the_runs_of_released_leases_past_a_controller_that_is_no_identity(state, tmp_path):
    old = "2000-01-01T00:00:00+00:00"      # released long ago: no controller elsewhere is still on them
    state.db.execute("UPDATE leases SET status = 'released', released_at = ?, deadline = ?", (old, old))
    proc = run_fleet(["down", "--all"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "has no attribute" not in proc.stderr, proc.stderr
    assert (_status(state, "r-bobs-0001"), _status(state, "r-mine-0002")) == ("lost", "lost"), proc.stderr


def test_down_of_the_lease_ends_its_run_whose_controller_is_no_identity(state, tmp_path):
    state.db.execute("UPDATE leases SET deadline = '2000-01-01T00:00:00+00:00' WHERE id = 'l-bobs-0001'")
    proc = run_fleet(["down", "l-bobs-0001"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "has no attribute" not in proc.stderr, proc.stderr
    assert _status(state, "r-bobs-0001") == "lost"
