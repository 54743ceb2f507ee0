"""A `fleet down` that fails is no release: a teammate's down, refused on another FLEET_HOME sharing
the state, marked the lease released before its provider said no, so every later `fleet run` on the
kept lease, and the end of a run that had finished cleanly, reported "released from outside this
run … its machines are gone" (red-team finding)."""
from __future__ import annotations

import json

from tests.conftest import run_fleet


def test_a_refused_down_leaves_the_kept_lease_usable(tmp_path, fleet_home):
    shared = {"FLEET_STATE_URL": f"sqlite:///{tmp_path / 'shared.db'}"}
    mine, theirs = {**shared, "FLEET_HOME": str(fleet_home)}, {**shared, "FLEET_HOME": str(tmp_path / "other-home")}
    (tmp_path / "fleet.toml").write_text('project = "shared"\ntemplate = "local-1gpu"\ncommand = "true"\n')
    up = run_fleet(["up", "--keep", "3m", "--json", "--allow-dirty", "--yes"], cwd=tmp_path, env=mine)
    assert up.returncode == 0, up.stderr
    lease = json.loads(up.stdout)["lease_id"]
    try:
        refused = run_fleet(["down", lease], cwd=tmp_path, env=theirs)
        assert refused.returncode != 0 and "could not release" in refused.stderr, refused.stderr
        again = run_fleet(["run", lease, "--json", "--", "echo", "still-mine"], cwd=tmp_path, env=mine)
        assert again.returncode == 0, again.stdout[-1000:] + again.stderr[-2000:]
        summary = json.loads(again.stdout)
        assert summary["status"] == "succeeded" and "released from outside" not in again.stderr
        status = json.loads(run_fleet(["status", "--json"], cwd=tmp_path, env=mine).stdout)
        assert [(v["status"], v["health"]) for v in status["leases"] if v["id"] == lease] == [("active", "up")]
    finally:
        assert run_fleet(["down", lease], cwd=tmp_path, env=mine).returncode == 0


def test_a_command_that_finished_is_recorded_as_it_ended_whatever_a_release_began(tmp_path, fleet_home):
    """A release from outside that had begun (its mark written) when the command ended cleanly: the
    run is the command's success, not "its machines are gone"."""
    import sqlite3

    from tests.conftest import communicate_or_kill, start_fleet_up, wait_for_line
    (tmp_path / "fleet.toml").write_text('project = "race"\ntemplate = "local-1gpu"\n'
                                         'command = "echo started; sleep 3; echo done"\n')
    up = start_fleet_up(tmp_path, ["--ci", "--allow-dirty", "--yes"], env={"FLEET_HOME": str(fleet_home)})
    wait_for_line(up, "started", timeout=120)
    db = sqlite3.connect(fleet_home / "state.db")
    with db:
        marked = db.execute("UPDATE leases SET released_at = '2026-01-01T00:00:00+00:00' WHERE status = 'active'")
    db.close()
    assert marked.rowcount == 1
    out, _ = communicate_or_kill(up, 120)
    assert up.returncode == 0, out[-2000:]
    assert "released from outside" not in out and "done" in out
