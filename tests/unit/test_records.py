"""Run records: append-only hash chain, tamper detection that names the record, secrets redacted."""
from __future__ import annotations

import json

import pytest

from fleet.errors import IntegrityError, NotFound
from fleet.records.chain import (GENESIS, REDACTED, RunRecord, append_record, ci_context, get_record, list_records,
                           redact_env, scrub, verify_chain, verify_chain_or_raise)
from fleet.state.db import Database


@pytest.fixture
def db(tmp_path):
    d = Database(tmp_path / "state.db")
    yield d
    d.close()


def _rec(i, **kw):
    return RunRecord(run_id=f"r-{i}", command=f"python train.py --seed {i}", project="p", user="u",
                     data_snapshots={"train": "a" * 64}, **kw)


def test_chain_links_each_record_to_the_previous(db):
    r1 = append_record(_rec(1), db)
    r2 = append_record(_rec(2, exit_status=0), db)
    assert r1.prev_hash == GENESIS and r2.prev_hash == r1.hash
    assert verify_chain(db) == []
    assert verify_chain_or_raise(db) == 2
    assert get_record("r-2", db).exit_status == 0
    assert [r.run_id for r in list_records(db)] == ["r-2", "r-1"]
    with pytest.raises(NotFound):
        get_record("r-9", db)


def test_written_once(db):
    append_record(_rec(1), db)
    with pytest.raises(IntegrityError, match="written once"):
        append_record(_rec(1), db)


def test_edit_is_detected_and_named(db):
    for i in range(4):
        append_record(_rec(i), db)
    row = db.execute("SELECT body FROM run_records WHERE run_id = 'r-1'")[0]
    body = json.loads(row["body"])
    body["exit_status"] = 0
    db.execute("UPDATE run_records SET body = ? WHERE run_id = 'r-1'", (json.dumps(body),))
    problems = verify_chain(db)
    assert problems and "(run r-1) was modified" in problems[0]
    with pytest.raises(IntegrityError, match="r-1"):
        verify_chain_or_raise(db)


def test_rewrite_with_recomputed_hash_blames_the_rewritten_record(db):
    import hashlib
    for i in range(3):
        append_record(_rec(i), db)
    row = db.execute("SELECT body FROM run_records WHERE run_id = 'r-1'")[0]
    body = row["body"].replace("--seed 1", "--seed 99")
    db.execute("UPDATE run_records SET body = ?, hash = ? WHERE run_id = 'r-1'",
               (body, hashlib.sha256(body.encode()).hexdigest()))
    assert "(run r-1) was rewritten" in verify_chain(db)[0]


def test_deleted_record_is_detected(db):
    for i in range(3):
        append_record(_rec(i), db)
    db.execute("DELETE FROM run_records WHERE run_id = 'r-0'")
    assert "a record was removed" in verify_chain(db)[0]


def test_secrets_never_enter_a_record(db):
    env = {"HF_TOKEN": "hf_abcdef123", "MY_PASSWORD": "pw12345", "DB_URL": "postgres://x", "SEED": "1",
           "AWS_SECRET_ACCESS_KEY": "zzzzzzzz", "CUSTOM": "s3cr3t-value"}
    assert redact_env(env, ["CUSTOM"]) == {"HF_TOKEN": REDACTED, "MY_PASSWORD": REDACTED, "DB_URL": "postgres://x",
                                           "SEED": "1", "AWS_SECRET_ACCESS_KEY": REDACTED, "CUSTOM": REDACTED}
    cmd = scrub("python t.py --token hf_abcdef123 --x s3cr3t-value", env, ["CUSTOM"])
    assert "hf_abcdef123" not in cmd and "s3cr3t-value" not in cmd
    rec = append_record(RunRecord(run_id="r-s", command=cmd, env=env), db, secrets=["CUSTOM"])
    stored = db.execute("SELECT body FROM run_records WHERE run_id = 'r-s'")[0]["body"]
    for value in ("hf_abcdef123", "pw12345", "zzzzzzzz", "s3cr3t-value"):
        assert value not in stored
    assert rec.env["SEED"] == "1"


def test_ci_context_keeps_facts_not_tokens():
    ctx = ci_context({"CI": "true", "GITHUB_SHA": "abc", "GITHUB_TOKEN": "ghs_x", "GITHUB_RUN_ID": "7"})
    assert ctx == {"CI": "true", "GITHUB_SHA": "abc", "GITHUB_RUN_ID": "7"}
    assert ci_context({}) == {}
