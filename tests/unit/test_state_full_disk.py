"""A state database on a full disk said only "database or disk is full (the disk is full: free some
space)": not how much room was left nor on which filesystem, so a user whose FLEET_HOME sat on a small
/var freed space in their home instead. The line, and the warning of a run waiting it out, now say
both. SQLite's own page limit stands in for the full disk: the same SQLITE_FULL, on any machine."""
from __future__ import annotations

import os
import re
from types import SimpleNamespace

import pytest

from fleet.errors import StateUnavailable
from fleet.records.chain import RunRecord, append_record
from fleet.run.state_wait import StateWait
from fleet.state.db import Database

_SPACE = re.compile(r"database or disk is full; [\d.]+ (B|KiB|MiB|GiB) free on (\S+), the filesystem that holds it")


@pytest.fixture
def full_db(tmp_path):
    db = Database(tmp_path / "home" / "state.db")
    pages = db._conn().execute("PRAGMA page_count").fetchone()[0]
    db._conn().execute(f"PRAGMA max_page_count = {pages + 2}")
    yield db
    db.close()


def _fill(db, start: int = 0) -> None:
    for i in range(start, start + 200):
        append_record(RunRecord(run_id=f"r-{i:04d}", command="x" * 4000, user="u"), db)


def test_a_full_disk_names_the_space_left_and_the_filesystem(full_db, tmp_path):
    with pytest.raises(StateUnavailable) as err:
        _fill(full_db)
    line = err.value.one_line()
    assert line.startswith(f"state database {tmp_path / 'home' / 'state.db'}: "), line
    found = _SPACE.search(line)
    assert found, line
    mount = found.group(2)
    assert os.path.ismount(mount) and str(tmp_path).startswith(mount.rstrip("/") + "/"), line
    assert line.endswith("(the disk is full: free some space)")


def test_a_run_waiting_out_a_full_disk_says_where(full_db):
    warnings: list[str] = []
    wait = StateWait(full_db, SimpleNamespace(warn=warnings.append), wait_s=0)
    with pytest.raises(StateUnavailable):
        wait(lambda: _fill(full_db), "the run's record")
    assert len(warnings) == 1 and _SPACE.search(warnings[0]), warnings
    assert "waiting up to" in warnings[0]
