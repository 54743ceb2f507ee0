"""`fleet runs ls`: a run that ended without an exit status (lost: its controller died) shows "-" in
the exit column, as every other empty cell does, not the word None (red-team finding)."""
from __future__ import annotations

from fleet.records.chain import RunRecord
from fleet.records.views import runs_table
from fleet.render.text import to_text


def test_a_lost_run_has_no_exit_status_and_shows_a_dash():
    lost = RunRecord(run_id="r-1", command="x", status="lost", exit_status=None)
    done = RunRecord(run_id="r-2", command="x", status="succeeded", exit_status=0)
    rows = runs_table([lost, done]).rows
    assert rows[0].cells[3] == "-" and rows[1].cells[3] == "0"
    assert "None" not in to_text(runs_table([lost]))
