"""`fleet budget`: this month's spend against the project and user budgets in fleet.toml."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta

from fleet.money.budget import Price, to_micro, utc_clock
from fleet.money.ledger import Ledger
from fleet.state.db import Database
from tests.fixtures.ledger import FakeClock, _Lease, _Machine


def test_budget_shows_month_spend_against_limits(tmp_path):
    home = tmp_path / "home"
    db = Database(home / "state.db")
    clock = FakeClock(utc_clock() - timedelta(seconds=1000))
    ledger = Ledger(db, clock)
    le = _Lease("l-1", "vision", "ana", "p3", "aws", [_Machine("m", (0,))])
    segs = [ledger.open_segment(lease=le, machine=le.machines[0], price=Price(to_micro("3.60"), "table"))]
    clock.advance(500)
    ledger.close(segs)                                     # $0.50 this month
    from fleet.money.reservations import Reservations     # and a live run (lease row pending) holds $0.30
    Reservations(db).reserve(lease_id="l-live", run_id="r-live", project="vision", owner="bo",
                             amount_micro=to_micro("0.30"), minimum_micro=1, lifetime_s=3600)
    db.close()
    (tmp_path / "fleet.toml").write_text('project = "vision"\nuser = "ana"\ncommand = "true"\nbudget = 5\n'
                                         '[budgets]\nproject_monthly = 2\nuser_monthly = 0.4\n')
    env = {**os.environ, "FLEET_HOME": str(home)}
    out = subprocess.run([sys.executable, "-m", "fleet.cli.main", "budget", "--json"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    scopes = {b["scope"].split(" (")[0]: b for b in data["budgets"]}
    assert scopes["project 'vision'"]["spent_usd"] == "0.500000"
    assert scopes["project 'vision'"]["reserved_usd"] == "0.300000"
    assert scopes["project 'vision'"]["remaining_usd"] == "1.200000"
    assert scopes["user 'ana'"]["reserved_usd"] == "0.000000"     # bo's run: not ana's budget
    assert scopes["user 'ana'"]["remaining_usd"] == "-0.100000"
    assert data["run_budget_usd"] == "5"
    text = subprocess.run([sys.executable, "-m", "fleet.cli.main", "budget"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert "user 'ana'" in text.stdout and "$0.00 left" in text.stdout
    assert "$1.20 left, $0.30 reserved by live runs" in text.stdout
