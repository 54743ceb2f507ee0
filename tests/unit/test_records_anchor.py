"""The chain tip is anchored outside the database: rewriting or dropping the newest record, which the
hash chain alone cannot see, is named by `audit --verify`."""
from __future__ import annotations

import hashlib
import json

import pytest

from fleet.records.lineage import audit_verify
from fleet.records.chain import RunRecord, append_record, canonical, verify_chain
from fleet.records.anchor import check_anchors, tip_path
from fleet.state.db import Database


@pytest.fixture
def db(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path))
    d = Database(tmp_path / "state.db")
    yield d
    d.close()


def _append(db, i):
    return append_record(RunRecord(run_id=f"r-{i}", command=f"train --seed {i}", project="p", user="u"), db)


def _rewrite_newest(db, **changes):
    """What someone with write access to the database does: new content, recomputed hash, same link."""
    row = db.execute("SELECT run_id, body FROM run_records ORDER BY seq DESC LIMIT 1")[0]
    body = {**json.loads(row["body"]), **changes}
    new_hash = hashlib.sha256(canonical(body)).hexdigest()
    db.execute("UPDATE run_records SET body = ?, hash = ? WHERE run_id = ?",
               (canonical(body).decode(), new_hash, row["run_id"]))
    return new_hash


def test_append_anchors_the_tip_atomically(db, tmp_path):
    _append(db, 1)
    r2 = _append(db, 2)
    tip = json.loads(tip_path(db).read_text())
    assert tip == {"seq": r2.seq, "run_id": "r-2", "hash": r2.hash}
    assert tip_path(db) == tmp_path / "records.tip"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".records.tip")]   # no temp left
    assert check_anchors(db) == [] and audit_verify(db=db)["ok"]


def test_rewritten_newest_record_is_caught(db):
    _append(db, 1)
    r2 = _append(db, 2)
    new_hash = _rewrite_newest(db, exit_status=0, command="train --better")
    assert verify_chain(db) == []          # the chain alone cannot tell
    result = audit_verify(db=db)
    assert not result["ok"]
    (problem,) = result["chain_problems"]
    assert f"run record #{r2.seq} (run r-2) anchored in" in problem and r2.hash[:12] in problem
    assert "rewritten or removed" in problem and new_hash[:12] in problem


def test_removed_newest_record_is_caught(db):
    r1 = _append(db, 1)
    _append(db, 2)
    db.execute("DELETE FROM run_snapshots WHERE run_id = ?", ("r-2",))
    db.execute("DELETE FROM run_records WHERE run_id = ?", ("r-2",))
    assert verify_chain(db) == []
    (problem,) = check_anchors(db)
    assert "(run r-2)" in problem and f"ends at record #{r1.seq} (run r-1" in problem


def test_database_may_run_ahead_of_an_older_anchor(db):
    """Another user appended to a shared database: our anchor is older but still in the chain."""
    _append(db, 1)
    older = tip_path(db).read_text()
    _append(db, 2)
    tip_path(db).write_text(older)
    assert check_anchors(db) == []
    tip_path(db).write_text("{not json")
    assert check_anchors(db) == [f"the record anchor {tip_path(db)} is unreadable"]


def test_no_anchor_yet_is_not_a_problem(db):
    assert check_anchors(db) == []
