"""`fleet audit --verify` fails on each way someone who can write FLEET_HOME tampers with the anchor:
a deleted anchor, and (with a signing key kept outside FLEET_HOME) a rewritten record whose chain
and local anchor were recomputed."""
from __future__ import annotations

import hashlib
import json

import pytest

from fleet.records.chain import RunRecord, append_record, canonical, verify_chain
from fleet.records.anchor import tip_path
from fleet.state.db import Database
from tests.conftest import run_fleet

KEY = "k" * 40


@pytest.fixture
def db(fleet_home):
    d = Database(fleet_home / "state.db")
    yield d
    d.close()


def _append(db, i):
    return append_record(RunRecord(run_id=f"r-{i}", command=f"train --seed {i}", project="p", user="tester"), db)


def rewrite_and_rechain(db, seq: int, **changes) -> None:
    """What someone with write access to the database does: change one record, recompute its hash
    and every later link and hash, so the chain verifies again."""
    rows = db.execute("SELECT seq, run_id, prev_hash, body FROM run_records WHERE seq >= ? ORDER BY seq", (seq,))
    prev = None
    for row in rows:
        body = json.loads(row["body"])
        if row["seq"] == seq:
            body.update(changes)
        if prev is not None:
            body["prev_hash"] = prev
        new = hashlib.sha256(canonical(body)).hexdigest()
        db.execute("UPDATE run_records SET body = ?, hash = ?, prev_hash = ? WHERE seq = ?",
                   (canonical(body).decode(), new, body["prev_hash"], row["seq"]))
        prev = new
    last = db.execute("SELECT seq, run_id, hash FROM run_records ORDER BY seq DESC LIMIT 1")[0]
    tip_path(db).write_text(json.dumps(dict(last)))        # the local anchor rewritten too


def _audit(cwd, env=None):
    return run_fleet(["audit", "--verify"], cwd=cwd, env=env)


def test_a_deleted_anchor_fails_the_audit(db, fleet_home, tmp_path):
    proc = _audit(tmp_path)
    assert proc.returncode == 0 and "chain intact" in proc.stdout          # no records, no anchor: fine
    _append(db, 1)
    _append(db, 2)
    assert _audit(tmp_path).returncode == 0
    tip_path(db).unlink()
    proc = _audit(tmp_path)
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert "chain intact" not in proc.stdout
    assert f"the record anchor {tip_path(db)} is missing" in proc.stderr
    # a team that upgraded from a fleet that wrote no anchor is told why it may be missing, and what then
    assert "a fleet from before record anchors wrote them" in proc.stderr.replace("\n", " ")


def test_without_a_key_the_audit_says_what_it_cannot_catch(db, tmp_path, monkeypatch):
    monkeypatch.delenv("FLEET_RECORDS_KEY", raising=False)
    _append(db, 1)
    proc = _audit(tmp_path)
    assert proc.returncode == 0 and "neither signed" in proc.stderr


def test_a_signed_anchor_catches_a_recomputed_chain_and_rewritten_tip(db, fleet_home, tmp_path, monkeypatch):
    key_file = tmp_path / "outside" / "records.key"
    key_file.parent.mkdir()
    key_file.write_text(KEY)
    monkeypatch.setenv("FLEET_RECORDS_KEY_FILE", str(key_file))
    for i in range(1, 4):
        _append(db, i)
    assert "sig" in json.loads(tip_path(db).read_text())
    proc = _audit(tmp_path)
    assert proc.returncode == 0 and "chain intact" in proc.stdout and "neither signed" not in proc.stderr
    rewrite_and_rechain(db, 2, exit_status=0, command="train --better")
    assert verify_chain(db) == []                         # the chain alone cannot tell
    proc = _audit(tmp_path)
    assert proc.returncode == 5 and "is not signed with the records key" in proc.stderr, proc.stderr


def test_keeping_the_signed_tip_while_rewriting_earlier_records_is_caught(db, tmp_path, monkeypatch):
    """The other half of the signed anchor: the old tip, validly signed, pins the old hash."""
    monkeypatch.setenv("FLEET_RECORDS_KEY", KEY)
    for i in range(1, 4):
        _append(db, i)
    signed = tip_path(db).read_text()
    rewrite_and_rechain(db, 1, status="succeeded")
    tip_path(db).write_text(signed)
    proc = _audit(tmp_path)
    assert proc.returncode == 5 and "(run r-3) anchored in" in proc.stderr and "no longer in the database" in proc.stderr


def test_a_key_file_inside_fleet_home_is_refused(db, fleet_home, tmp_path, monkeypatch):
    inside = fleet_home / "records.key"
    inside.write_text(KEY)
    monkeypatch.setenv("FLEET_RECORDS_KEY_FILE", str(inside))
    _append(db, 1)             # the record is stored; its anchor is written unsigned, with a warning
    proc = _audit(tmp_path)
    assert proc.returncode == 5 and "is inside FLEET_HOME" in proc.stderr and "Traceback" not in proc.stderr
    monkeypatch.setenv("FLEET_RECORDS_KEY_FILE", str(tmp_path / "short.key"))
    (tmp_path / "short.key").write_text("abc")
    proc = _audit(tmp_path)
    assert proc.returncode == 5 and "use at least 16" in proc.stderr
