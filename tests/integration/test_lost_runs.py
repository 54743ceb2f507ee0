"""`fleet down --all` sweeps runs left `running` on leases that ended before (their controller
died after, or while, the lease was released) and ends them as `lost` with a record, but never a
run whose controller provably still lives, nor one whose controller elsewhere may still beat."""
from __future__ import annotations

import json
import subprocess
from datetime import timedelta

from fleet.lost_runs import controller_identity
from fleet.models import to_jsonable, utcnow
from fleet.plan import make_plan
from fleet.providers.local import LocalProvider
from fleet.state import open_state
from tests.conftest import run_fleet


def _released_lease_with_run(state, lease_id: str, run_id: str, controller: dict, *, released_ago_s: int,
                             deadline_in_s: int) -> None:
    plan = make_plan(provider="local", template=LocalProvider().template("local-1gpu"), gpus=1,
                     max_duration_s=600, heartbeat_ttl_s=60, project="t", user="tester")
    state.begin_lease(lease_id, plan)
    state.create_run(run_id, lease_id=lease_id, project="t", user="tester", command="sleep 600",
                     log_path="/nonexistent", output_dir="/nonexistent", meta={"provider": "local"})
    now = utcnow()
    state.db.execute("UPDATE leases SET status = 'released', released_at = ?, deadline = ? WHERE id = ?",
                     (to_jsonable(now - timedelta(seconds=released_ago_s)),
                      to_jsonable(now + timedelta(seconds=deadline_in_s)), lease_id))
    row = state.db.execute("SELECT meta FROM runs WHERE id = ?", (run_id,))[0]
    meta = {**json.loads(row["meta"]), "controller": controller}
    state.db.execute("UPDATE runs SET meta = ? WHERE id = ?", (json.dumps(meta), run_id))


def _dead_controller() -> dict:
    child = subprocess.Popen(["sleep", "0"])
    ident = {**controller_identity(), "pid": child.pid, "start": "1"}
    child.wait()   # gone: the pid names no process now, or one that started at another time
    return ident


def test_down_all_ends_runs_whose_controller_is_gone_and_only_those(fleet_home, experiment):
    state = open_state()
    elsewhere = {**controller_identity(), "host": "another-laptop", "boot_id": "other-boot"}
    _released_lease_with_run(state, "l-dead0001", "r-dead-here", _dead_controller(),
                             released_ago_s=1, deadline_in_s=60)
    _released_lease_with_run(state, "l-live0001", "r-live-here", controller_identity(),
                             released_ago_s=3600, deadline_in_s=-3600)
    _released_lease_with_run(state, "l-away0001", "r-away-stale", elsewhere,
                             released_ago_s=3600, deadline_in_s=-3000)
    _released_lease_with_run(state, "l-away0002", "r-away-fresh", elsewhere,
                             released_ago_s=1, deadline_in_s=60)
    state.close()

    down = run_fleet(["down", "--all"], cwd=experiment)
    assert down.returncode == 0, down.stderr
    records = {r["run_id"]: r for r in json.loads(run_fleet(["runs", "ls", "--json"], cwd=experiment).stdout)["runs"]}
    assert sorted(records) == ["r-away-stale", "r-dead-here"], records
    assert all(r["status"] == "lost" for r in records.values())
    assert "is gone" in records["r-dead-here"]["reason"] and "l-dead0001 was released" in records["r-dead-here"]["reason"]
    assert "another-laptop" in records["r-away-stale"]["reason"]
    state = open_state()
    try:
        status = {r["id"]: r["status"] for r in state.list_runs()}
    finally:
        state.close()
    assert status == {"r-dead-here": "lost", "r-away-stale": "lost", "r-live-here": "running",
                      "r-away-fresh": "running"}, status
    # Idempotent: nothing more to end, and no record is ever written twice.
    again = run_fleet(["down", "--all"], cwd=experiment)
    assert again.returncode == 0 and "lost" not in again.stderr, again.stderr


def state_meta(run_id: str) -> str:
    state = open_state()
    try:
        return state.db.execute("SELECT meta FROM runs WHERE id = ?", (run_id,))[0]["meta"]
    finally:
        state.close()


def test_a_run_that_wrote_its_record_but_not_its_row_is_marked_from_its_record(fleet_home, experiment):
    """A nearly full disk: the run's record was written but the update of its row was not, so the row
    said `running` after its controller ended. `fleet down --all` used to mark it lost and warn that
    its record could not be written ("already has a record"): the row and the record disagreed."""
    from fleet.records.chain import RunRecord, append_record
    state = open_state()
    _released_lease_with_run(state, "l-done0001", "r-done-here", _dead_controller(), released_ago_s=1,
                             deadline_in_s=60)
    append_record(RunRecord(run_id="r-done-here", command="sleep 600", project="t", user="tester",
                            provider="local", template="local-1gpu", exit_status=0, status="succeeded",
                            ended_at=to_jsonable(utcnow()), cost_usd="0.01"), state.db)
    state.close()

    down = run_fleet(["down", "--all"], cwd=experiment)
    assert down.returncode == 0 and "already has a record" not in down.stderr, down.stderr
    assert "had ended (succeeded) and its record says so" in down.stderr, down.stderr
    state = open_state()
    try:
        row = state.db.execute("SELECT status, exit_code FROM runs WHERE id = 'r-done-here'")[0]
    finally:
        state.close()
    assert (row["status"], row["exit_code"]) == ("succeeded", 0)
    summary = json.loads(state_meta("r-done-here"))["summary"]
    assert summary["status"] == "succeeded" and summary["ended_at"] and "its record" in summary["message"]
    listed = json.loads(run_fleet(["runs", "ls", "--json"], cwd=experiment).stdout)["runs"]
    assert [r["status"] for r in listed if r["run_id"] == "r-done-here"] == ["succeeded"]
