"""A shared state holds rows a teammate's client wrote: a budget reservation whose amount is text
(SQLite keeps it) or astronomically large, a ledger row with a negative cost. `fleet budget` (and the
check every `fleet up` makes) must not end in an internal error over one such row, nor let a negative
cost hand the whole scope money back."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta

from fleet.money.budget import Price, format_usd, from_micro, to_micro, utc_clock
from fleet.money.ledger import COLUMNS, Ledger, row_digest
from fleet.money.reservations import Reservations
from fleet.state.db import Database
from tests.fixtures.ledger import FakeClock, _Lease, _Machine


def _seed(tmp_path) -> Database:
    """$0.50 spent by ana this month, and bo's live run holding $0.30 of project 'vision'."""
    db = Database(tmp_path / "home" / "state.db")
    clock = FakeClock(utc_clock() - timedelta(seconds=1000))
    ledger = Ledger(db, clock)
    lease = _Lease("l-1", "vision", "ana", "p3", "aws", [_Machine("m", (0,))])
    segments = [ledger.open_segment(lease=lease, machine=lease.machines[0], price=Price(to_micro("3.60"), "table"))]
    clock.advance(500)
    ledger.close(segments)
    Reservations(db).reserve(lease_id="l-live", run_id="r-live", project="vision", owner="bo",
                             amount_micro=to_micro("0.30"), minimum_micro=1, lifetime_s=3600)
    (tmp_path / "fleet.toml").write_text('project = "vision"\nuser = "ana"\ncommand = "true"\n'
                                         '[budgets]\nproject_monthly = 2\nuser_monthly = 5\n')
    return db


def _budget(tmp_path) -> dict:
    env = {**os.environ, "FLEET_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-m", "fleet.cli.main", "budget", "--json"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "internal error" not in out.stderr, out.stderr
    return {b["scope"].split(" (")[0]: b for b in json.loads(out.stdout)["budgets"]}


def test_a_reservation_whose_amount_is_text_is_left_out_not_an_internal_error(tmp_path):
    db = _seed(tmp_path)
    db.execute("UPDATE budget_reservations SET amount_micro = 'lots'")
    db.close()
    project = _budget(tmp_path)["project 'vision'"]
    assert project["reserved_usd"] == "0.000000" and project["spent_usd"] == "0.500000"


def test_a_reservation_of_an_astronomical_amount_is_shown_and_fills_the_budget(tmp_path):
    db = _seed(tmp_path)
    db.execute("UPDATE budget_reservations SET amount_micro = 1e40")
    db.close()
    project = _budget(tmp_path)["project 'vision'"]
    assert project["reserved_usd"].startswith("10000000000000000") and project["remaining_usd"].startswith("-1000000")
    assert format_usd(10 ** 40).startswith("$10,000,000,000,000,000,000,000,000,000,000,000")
    assert str(from_micro(-(10 ** 40))) == "-10000000000000000000000000000000000.000000"


def test_a_negative_ledger_cost_does_not_give_the_budget_money_back(tmp_path):
    """Even with its digest made to match: the digest is no key, and a writer never makes such a row."""
    db = _seed(tmp_path)
    row = db.execute("SELECT * FROM ledger ORDER BY id LIMIT 1")[0]
    forged = {**row, "cost_micro": -to_micro("1000"), "seq": 99, "kind": "tick"}
    values = tuple(forged[c] for c in COLUMNS)
    db.execute(f"INSERT INTO ledger ({', '.join(COLUMNS)}, digest) VALUES ({', '.join('?' * (len(COLUMNS) + 1))})",
               values + (row_digest(values),))
    db.close()
    project = _budget(tmp_path)["project 'vision'"]
    assert project["spent_usd"] == "0.500000" and project["remaining_usd"] == "1.200000"
