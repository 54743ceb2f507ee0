"""FLEET_STORE_GC_WAIT=inf made a snapshot write wait for ever behind a running gc, and `nan` or `-5`
were quietly taken for 0 (fail at once during a gc): each is refused in one line, like `abc` was."""
from __future__ import annotations

import json

import pytest

from tests.conftest import run_fleet


@pytest.mark.parametrize("wait", ["inf", "-inf", "nan", "-5", "1e400", "abc"])
def test_a_wait_that_is_not_a_finite_time_is_refused_in_one_line(tmp_path, fleet_home, wait):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("a")
    store = tmp_path / "store"
    proc = run_fleet(["snapshot", "create", "data", "--store", str(store)], cwd=tmp_path,
                     env={"FLEET_STORE_GC_WAIT": wait})
    assert proc.returncode != 0 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"fleet: error: FLEET_STORE_GC_WAIT={wait!r} is not a number of seconds "
        "(give a finite number, 0 or more; default 60)"]


@pytest.mark.parametrize("wait", ["0", "2.5", ""])
def test_a_finite_wait_is_taken(tmp_path, fleet_home, wait):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("a")
    proc = run_fleet(["snapshot", "create", "data", "--store", str(tmp_path / "store"), "--json"], cwd=tmp_path,
                     env={"FLEET_STORE_GC_WAIT": wait})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["id"]
