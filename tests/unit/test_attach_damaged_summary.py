"""`fleet attach RUN` to an ended run whose summary in the shared state is not one fleet wrote (a
teammate's client, a hand edit): one line saying so, exit 10, never "internal error: TypeError:
RunSummary.__init__() missing 8 required positional arguments"."""
from __future__ import annotations

import json

import pytest

from tests.conftest import run_fleet
from tests.unit.test_state_damaged_rows import _seed


@pytest.mark.parametrize("summary", [{"exit_code": [1], "cost_usd": "NaN"}, [1, 2], {"exit_code": 0, "run_id": 5}])
def test_attach_to_a_run_whose_summary_is_damaged_is_one_line(fleet_home, tmp_path, summary):
    from fleet.state import open_state
    state = open_state()
    _seed(state, "l-bobs-0001", "r-bobs-0001", user="bob")
    state.db.execute("UPDATE runs SET status = 'failed', exit_code = 1, ended_at = '2026-12-01T00:00:00+00:00',"
                     " meta = ?", (json.dumps({"summary": summary}),))
    state.close()
    proc = run_fleet(["attach", "r-bobs-0001"], cwd=tmp_path, timeout=60)
    assert "internal error" not in proc.stderr, proc.stderr
    assert proc.returncode == 10, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fleet: run r-bobs-0001 failed"), lines
