"""FLEET_STATE_LOCK_WAIT_S: how long a state-database statement waits for a lock another process holds."""
from __future__ import annotations

import sqlite3
import time

import pytest

from fleet.errors import EnvironmentProblem
from fleet.state.db import Database


def test_a_statement_gives_up_on_a_held_lock_after_the_configured_wait(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_STATE_LOCK_WAIT_S", "0.5")
    db = Database(tmp_path / "state.db")
    other = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        began = time.monotonic()
        with pytest.raises(Exception, match="locked"):
            with db.transaction():
                db.execute("CREATE TABLE waited (x)")
        assert 0.4 <= time.monotonic() - began < 5
    finally:
        other.close()
        db.close()


@pytest.mark.parametrize("raw", ["soon", "nan", "inf", "-1", "1e9"])
def test_a_wait_that_is_not_a_number_of_seconds_is_refused_in_one_line(tmp_path, monkeypatch, raw):
    monkeypatch.setenv("FLEET_STATE_LOCK_WAIT_S", raw)
    with pytest.raises(EnvironmentProblem) as exc:
        Database(tmp_path / "state.db")
    assert "FLEET_STATE_LOCK_WAIT_S" in str(exc.value) and "\n" not in str(exc.value)
