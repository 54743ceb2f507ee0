"""A lease row of the shared state whose heartbeat TTL, or whose meta's GPU count or first deadline,
is not a number (SQLite keeps a teammate's client's text; a hand edit): `fleet down` released the
lease but warned "could not close the cost ledger …: could not convert string to float: 'x'" and
left its machine unbilled, and the sweep of lost runs stopped at it. It reads as the default TTL."""
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
    yield s
    s.close()


@pytest.mark.parametrize("damage", [
    "UPDATE leases SET heartbeat_ttl_s = 'x'",
    "UPDATE leases SET heartbeat_ttl_s = 1e300",
    "UPDATE leases SET meta = '{\"gpus\": \"x\", \"machines\": [], \"first_deadline_s\": \"soon\"}'",
])
def test_down_bills_the_machine_of_a_lease_whose_numbers_are_not_numbers(state, tmp_path, damage):
    state.db.execute(damage)
    proc = run_fleet(["down", "l-bobs-0001"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "could not" not in proc.stderr, proc.stderr
    billed = state.db.execute("SELECT DISTINCT machine_id FROM ledger WHERE lease_id = 'l-bobs-0001'")
    assert [r["machine_id"] for r in billed] == ["l-bobs-0001-n0"]


def test_the_lost_run_sweep_goes_past_a_lease_whose_ttl_is_text(state, tmp_path):
    old = "2000-01-01T00:00:00+00:00"
    state.db.execute("UPDATE leases SET heartbeat_ttl_s = 'x', status = 'released', released_at = ?, deadline = ?",
                     (old, old))
    state.db.execute("UPDATE runs SET meta = ?", (json.dumps({"detached": True}),))   # its controller elsewhere
    proc = run_fleet(["down", "--all"], cwd=tmp_path)
    assert proc.returncode == 0 and "could not" not in proc.stderr, proc.stderr
    assert state.db.execute("SELECT status FROM runs")[0]["status"] == "lost"
