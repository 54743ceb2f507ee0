"""`fleet runs ls`: `--limit 99999999999999999999` was `internal error: OverflowError` (too large for
SQLite) and `--limit 0` / `-1` listed nothing / everything; `--project p` filtered only the newest
`--limit` records of every project, so p's runs behind 50 newer runs of other projects were not listed."""
from __future__ import annotations

import json

import pytest

from fleet.records.chain import RunRecord, append_record, list_records
from fleet.state.db import Database
from tests.conftest import run_fleet


@pytest.mark.parametrize("limit", ["99999999999999999999", "0", "-1"])
def test_a_limit_out_of_range_is_a_usage_error(tmp_path, fleet_home, limit):
    proc = run_fleet(["runs", "ls", "--limit", limit, "--json"], cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fleet: error: Invalid value for '--limit'")


def test_a_project_is_listed_behind_newer_runs_of_others(tmp_path):
    db = Database(tmp_path / "state.db")
    try:
        for i in range(3):
            append_record(RunRecord(run_id=f"mine-{i}", command="x", project="mine", user="u"), db)
        for i in range(250):
            append_record(RunRecord(run_id=f"other-{i}", command="x", project="other", user="u"), db)
        assert [r.run_id for r in list_records(db, limit=2, project="mine")] == ["mine-2", "mine-1"]
        assert [r.run_id for r in list_records(db, limit=50, project="mine")] == ["mine-2", "mine-1", "mine-0"]
        assert len(list_records(db, limit=50)) == 50 and list_records(db, limit=1)[0].run_id == "other-249"
    finally:
        db.close()


def test_runs_ls_project_from_the_cli(tmp_path, fleet_home):
    from fleet.state import open_state
    state = open_state()
    try:
        append_record(RunRecord(run_id="mine-0", command="x", project="mine", user="u"), state.db)
        for i in range(5):
            append_record(RunRecord(run_id=f"other-{i}", command="x", project="other", user="u"), state.db)
    finally:
        state.close()
    proc = run_fleet(["runs", "ls", "--project", "mine", "--limit", "3", "--json"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [r["run_id"] for r in json.loads(proc.stdout)["runs"]] == ["mine-0"]
