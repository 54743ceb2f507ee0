"""The library's `down(all_leases=True)` and `status()` mean the caller's leases, as the CLI's
`fleet down --all` and `fleet status` do: they released and listed every teammate's on a shared
state, and a templated `all_leases="no"` (truthy) released everything (red-team finding)."""
from __future__ import annotations

import pytest

from fleet import leases
from fleet.errors import UsageError
from fleet.state import open_state
from tests.unit.test_detach_follow_recovery import _lease


def test_all_leases_and_status_are_the_callers_unless_all_users(tmp_path, fleet_home, monkeypatch):
    state = open_state(f"sqlite:///{tmp_path / 'state.db'}")
    alice, bob = _lease(state, "alice"), _lease(state, "bob")
    monkeypatch.setenv("FLEET_USER", "bob")
    assert [v["id"] for v in leases.status(state, check=False)] == [bob]
    assert sorted(v["id"] for v in leases.status(state, check=False, all_users=True)) == sorted([alice, bob])
    for bad in ("no", 1):
        with pytest.raises(UsageError, match="all_leases must be True or False"):
            leases.down([], all_leases=bad, state=state)
    released = leases.down([], all_leases=True, state=state)
    assert bob in released and alice not in released, released
    assert state.get_lease(alice).status == "active"


def test_the_caller_is_who_fleet_toml_names(tmp_path, fleet_home, monkeypatch):
    """`user = "alice"` in ./fleet.toml: `fleet.up` records her leases under alice, so the library's
    `down(all_leases=True)` and `status()` mean alice's there, as the CLI's do (a review found them
    reading FLEET_USER or the login only: alice's kept lease stayed up)."""
    state = open_state(f"sqlite:///{tmp_path / 'state.db'}")
    alice = _lease(state, "alice")
    monkeypatch.setenv("FLEET_USER", "bob")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fleet.toml").write_text('user = "alice"\ncommand = "true"\n')
    assert [v["id"] for v in leases.status(state, check=False)] == [alice]
    assert alice in leases.down([], all_leases=True, state=state)
