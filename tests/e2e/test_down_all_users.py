"""`fleet down --all` on a team's shared state releases the caller's own leases, not everyone's.

`fleet status` lists only your own leases, yet `fleet down --all` released every live lease in the
state: on a team's PostgreSQL, one person's cleanup (or the CI job's `after_script: fleet down
--all`) destroyed every teammate's machines and ended their running runs as lost. Every user's
leases stay reachable by id, or with --all-users."""
from __future__ import annotations

import json

from tests.conftest import processes_under, run_fleet


def _live(user: str, cwd) -> list[str]:
    proc = run_fleet(["status", "--json"], cwd=cwd, env={"FLEET_USER": user})
    assert proc.returncode == 0, proc.stderr
    return [lease["id"] for lease in json.loads(proc.stdout)["leases"]]


def test_down_all_releases_only_the_callers_leases(experiment, fleet_home):
    alice = run_fleet(["up", "--keep", "5m", "--json"], cwd=experiment, env={"FLEET_USER": "alice"})
    assert alice.returncode == 0, alice.stderr
    lease = json.loads(alice.stdout)["lease_id"]
    bob = run_fleet(["down", "--all"], cwd=experiment, env={"FLEET_USER": "bob"})
    assert bob.returncode == 0, bob.stderr
    assert lease not in bob.stdout
    assert _live("alice", experiment) == [lease]            # alice's machines are still up
    assert processes_under(fleet_home / "machines" / f"{lease}-n0")
    everyone = run_fleet(["down", "--all", "--all-users"], cwd=experiment, env={"FLEET_USER": "bob"})
    assert everyone.returncode == 0 and lease in everyone.stdout, everyone.stderr
    assert _live("alice", experiment) == []
