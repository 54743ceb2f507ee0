"""On a shared state, another user's kept lease can be seen and ended (`fleet down`), not extended
or run on: an extension spends its owner's money past what their `--keep` budget allowed, and a
run on it was recorded, billed and budget-checked as the owner's (red-team findings). Its owner,
under `user =` in fleet.toml or FLEET_USER, still can."""
from __future__ import annotations

import json

import pytest

from tests.conftest import run_fleet
from tests.e2e.test_keep_capped import kept_lease

pytestmark = pytest.mark.timeout(180)


def test_another_users_kept_lease_cannot_be_extended_or_run_on(tmp_path, fleet_home):
    lease = kept_lease(tmp_path, "shared", "1m", "20m", 'user = "alice"\n')
    elsewhere = tmp_path / "bob"
    elsewhere.mkdir()
    bob = {"FLEET_USER": "bob"}
    try:
        for argv in (["extend", lease, "3m"], ["run", lease, "--", "echo", "bob-ran"]):
            refused = run_fleet(argv, cwd=elsewhere, env=bob)
            lines = refused.stderr.strip().splitlines()
            assert refused.returncode == 2 and len(lines) == 1, refused.stderr
            assert f"lease {lease} is alice's, not bob's" in lines[0] and "bob-ran" not in refused.stdout
        leases = json.loads(run_fleet(["status", "--json"], cwd=tmp_path).stdout)["leases"]
        runs = next(entry for entry in leases if entry["id"] == lease)["runs"]
        assert len(runs) == 1, runs                                       # alice's; bob's never started
        ok = run_fleet(["extend", lease, "3m"], cwd=tmp_path)              # alice, by `user =` in fleet.toml
        assert ok.returncode == 0 and f"lease {lease} now ends at" in ok.stdout, ok.stderr
    finally:
        assert run_fleet(["down", lease], cwd=elsewhere, env=bob).returncode == 0   # seen, and ended
