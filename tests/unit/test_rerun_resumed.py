"""A resumed attempt started from a checkpoint, an input its record must name for a rerun to start
from it too (tests/e2e/test_checkpoints.py reruns one). A record written before fleet kept it names
only the run it resumed: a rerun from scratch would run something else, so it is refused."""
from __future__ import annotations

from fleet.records.chain import RunRecord, append_record
from fleet.state.db import Database
from tests.conftest import run_fleet


def _record(fleet_home, **fields) -> None:
    db = Database(fleet_home / "state.db")
    try:
        append_record(RunRecord(run_id="r-2", command="python train.py", project="p", user="tester",
                                code_snapshot="a" * 64, config={"command": "python train.py"}, **fields), db)
    finally:
        db.close()


def test_a_resumed_run_recorded_without_its_checkpoints_is_not_rerun_from_scratch(fleet_home, tmp_path):
    _record(fleet_home, resumed_from="r-1")          # as an older fleet wrote it: no "resumed"
    done = run_fleet(["rerun", "r-2"], cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert ("fleet: error: cannot rerun r-2: it resumed from run r-1's checkpoints, which its record does not "
            "name") in done.stderr
    assert "lease" not in done.stderr


def test_a_rerun_refuses_a_checkpoint_the_store_lost(fleet_home, tmp_path):
    _record(fleet_home, resumed_from="r-1", resumed={"attempt": 2, "checkpoints": {"0": "b" * 64}})
    done = run_fleet(["rerun", "r-2"], cwd=tmp_path)
    assert done.returncode != 0 and "lease" not in done.stderr, done.stderr
    assert "fleet: error: cannot rerun r-2: the checkpoint node 0 started from: no snapshot bbbbbbbbbbbb" \
        in done.stderr, done.stderr
