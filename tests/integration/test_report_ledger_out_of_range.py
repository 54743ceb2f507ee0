"""A shared ledger row whose digest matches (it is no key) but whose figures no writer makes: a cost
of 2^63−1 micro-dollars, 2^31−1 GPUs for 2^63−1 ms. On PostgreSQL `fleet report` failed as "internal
error: NumericValueOutOfRange: bigint out of range" for the whole team, on SQLite as an integer
overflow blamed on the database. The row is set aside as impossible, like a negative cost; a budget
counts it as the most a row can cost instead of overflowing or refusing every check."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest

from fleet.money.budget import utc_clock
from fleet.money.ledger import _INSERT, iso, row_digest
from tests.conftest import run_fleet

BIG = 2 ** 63 - 1
MAX_COST_MICRO = 10 ** 14      # $100M: the most one row can cost (fleet/money/ledger.py)


def _row(db, cost: int, gpus: int = 1, duration_ms: int = 3_600_000, seq: int = 0) -> None:
    start = iso(utc_clock() - timedelta(seconds=5))    # this month's: the budget counts it
    values = (f"m@{seq}", seq, "tick", start, start, duration_ms, 1_000_000, cost, "list", 0, gpus, 500, 10,
              "vision", "bob", "r1", "t", "aws", "L1", "m1", start)
    db.execute(_INSERT, values + (row_digest(values),))


@pytest.fixture(params=["sqlite", "postgresql"])
def team_env(request, fleet_home, monkeypatch):
    env = {"FLEET_HOME": str(fleet_home)}
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
        monkeypatch.setenv("FLEET_STATE_URL", url)
        env["FLEET_STATE_URL"] = url
    return env


@pytest.mark.parametrize("forged", [dict(cost=BIG), dict(cost=1, gpus=2 ** 31 - 1, duration_ms=BIG)])
def test_a_row_out_of_range_is_set_aside_not_an_overflow(tmp_path, team_env, forged):
    from fleet.state import open_state
    state = open_state()
    _row(state.db, 1_000_000)                                  # $1 of honest spend
    _row(state.db, seq=1, **forged)
    _row(state.db, seq=2, **forged)                            # two: their sum is past BIGINT as well
    state.close()
    proc = run_fleet(["report", "--json"], cwd=tmp_path, env=team_env)
    assert proc.returncode == 0 and "internal error" not in proc.stderr, proc.stderr
    data = json.loads(proc.stdout)
    assert data["total"]["cost_usd"] == "1.000000"
    assert sum("out of range" in c for c in data["corrupt_rows"]) == 2, data["corrupt_rows"]


def test_a_budget_counts_a_row_out_of_range_as_the_most_a_row_costs(tmp_path, team_env):
    from fleet.state import open_state
    state = open_state()
    for seq in range(3):
        _row(state.db, BIG, seq=seq)
    state.close()
    (tmp_path / "fleet.toml").write_text('project = "vision"\nuser = "ana"\ncommand = "true"\n'
                                         '[budgets]\nproject_monthly = 2\n')
    proc = run_fleet(["budget", "--json"], cwd=tmp_path, env=team_env)
    assert proc.returncode == 0, proc.stderr
    [scope] = json.loads(proc.stdout)["budgets"]
    assert scope["spent_usd"] == f"{3 * MAX_COST_MICRO // 1_000_000}.000000"
