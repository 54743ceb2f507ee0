"""`fleet report` adds up a ledger a whole team writes, whose digest has no key (a red-team finding):
a rollup group with a negative or infinite sum, or a day that is no date (from a forged row's
start), made the report show -$5.00 or fail as an internal error in every format. Such a group is
left out of the totals and listed as damaged."""
from __future__ import annotations

import json

import pytest

from fleet.money.ledger import _INSERT, row_digest
from tests.conftest import run_fleet


def _ledger_row(db, start: str, cost: int = 1_000_000) -> None:
    values = (f"m@{start}", 0, "tick", start, start, 3_600_000, 1_000_000, cost, "list", 0, 1, None, None,
              "p", "u", "r1", "t", "aws", "L1", "m1", "2026-12-01T00:00:00.000000Z")
    db.execute(_INSERT, values + (row_digest(values),))


@pytest.mark.parametrize("hostile", ["negative", "infinite", "no-day-rollup", "no-day-row"])
def test_a_forged_group_is_left_out_and_named_in_every_format(tmp_path, fleet_home, hostile):
    from fleet.state import open_state
    state = open_state()
    _ledger_row(state.db, "2026-12-01T00:00:00.000000Z")                     # $1 of honest spend
    rollup = "INSERT INTO ledger_rollup VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
    if hostile == "negative":
        state.db.execute(rollup, ("2026-12-02", "p", "u", "t", 0, "r9", 1, -5_000_000, 1, 1, 1, 1.0, 1, 1.0))
    elif hostile == "infinite":
        state.db.execute(rollup, ("2026-12-02", "p", "u", "t", 0, "r9", 1, 1000, 1, 1, 1, float("inf"), 1, 1.0))
    elif hostile == "no-day-rollup":
        state.db.execute(rollup, ("<b>zz", "p", "u", "t", 0, "r9", 1, 1000, 1, 1, 1, 1.0, 1, 1.0))
    else:
        _ledger_row(state.db, "zzzz-not-a-date")
    state.close()
    env = {"FLEET_HOME": str(fleet_home)}
    for fmt in ("table", "json", "csv", "md", "html"):
        out = tmp_path / f"report.{fmt}"
        proc = run_fleet(["report", "--format", fmt, "-o", str(out)], cwd=tmp_path, env=env)
        assert proc.returncode == 0, (fmt, proc.stderr)
    data = json.loads(run_fleet(["report", "--json"], cwd=tmp_path, env=env).stdout)
    assert data["total"]["cost_usd"] == "1.000000" and data["total"]["runs"] == 1
    assert any("negative or not finite" in c or "digest" in c for c in data["corrupt_rows"]), data["corrupt_rows"]
