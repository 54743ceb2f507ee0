"""Secret values are redacted from every field of a run record before it is hashed and stored, and
a record whose command, setup or env embedded a redacted secret refuses to be replayed."""
from __future__ import annotations

import pytest

from fleet.errors import UsageError
from fleet.records.lineage import rerun_config
from fleet.records.chain import REDACTED, RunRecord, append_record, get_record
from fleet.state.db import Database
from fleet.state.store import StateStore


@pytest.fixture
def db(tmp_path):
    d = Database(tmp_path / "state.db")
    yield d
    d.close()


def test_nested_config_and_embedded_env_values_are_redacted(db, monkeypatch):
    monkeypatch.setenv("WANDB_KEY_X", "canary-1234567")
    monkeypatch.setenv("FLEET_SECRET_NAMES", "")
    config = {"command": "train --key canary-1234567", "setup": "login canary-1234567",
              "env": {"URL": "https://u:canary-1234567@h"}, "secrets": ["WANDB_KEY_X"]}
    rec = append_record(RunRecord(run_id="r-1", command="train --key canary-1234567", config=config,
                                  env={"URL": "https://u:canary-1234567@h"}, code_snapshot="a" * 64),
                        db, secrets=["WANDB_KEY_X"])
    body = db.execute("SELECT body FROM run_records WHERE run_id = 'r-1'")[0]["body"]
    assert "canary-1234567" not in body
    assert rec.config["env"]["URL"] == f"https://u:{REDACTED}@h"
    with pytest.raises(UsageError, match="command contained a secret"):
        rerun_config(get_record("r-1", db), db.path.parent)


def test_rerun_refuses_a_setup_or_env_value_that_held_a_secret(db, monkeypatch, tmp_path):
    monkeypatch.setenv("TOK_X", "canary-7654321")
    append_record(RunRecord(run_id="r-2", command="train", code_snapshot="a" * 64,
                            config={"command": "train", "env": {"URL": "x:canary-7654321"}}), db, secrets=["TOK_X"])
    with pytest.raises(UsageError, match=r"\[env\] URL contained a secret"):
        rerun_config(get_record("r-2", db), tmp_path)


def test_state_runs_table_never_holds_a_secret_value(db, monkeypatch):
    from fleet.masking import Masker
    monkeypatch.setenv("MY_SECRET_VALUE", "canary-abcdefg")
    state = StateStore(db)
    masker = Masker.for_config(None, names=["MY_SECRET_VALUE"])
    state.create_run("r-3", lease_id=None, project="p", user="u", command="run canary-abcdefg", log_path="l",
                     output_dir="o", meta={"note": "canary-abcdefg"}, masker=masker)
    state.finish_run("r-3", "failed", 1, {"summary": {"message": "bad canary-abcdefg"}}, masker=masker)
    row = state.get_run("r-3")
    assert row["command"] == f"run {REDACTED}"
    assert "canary-abcdefg" not in repr(row)


def test_settings_named_like_secrets_are_not_masked_and_ids_never_are(db, monkeypatch):
    """NUM_KEYS=8 or TOKENIZERS_PARALLELISM=false are settings (a red-team finding: masking "8" took
    it out of the run id and every snapshot id, so `fleet runs show` and `audit --verify` failed for
    ever); a real token under such a name is still masked, and a named secret that happens to occur
    inside an id leaves the id whole."""
    from fleet.masking import Masker
    monkeypatch.setenv("FLEET_SECRET_NAMES", "")
    env = {"NUM_KEYS": "8", "TOKENIZERS_PARALLELISM": "false", "MAX_TOKENS": "131072",
           "WANDB_API_KEY": "k3y-0f-f0rty-ch4rs"}
    masker = Masker.for_config(None, env=env)
    assert masker("run r-8 with 8 keys, parallelism false, 131072 tokens, key k3y-0f-f0rty-ch4rs") == \
        "run r-8 with 8 keys, parallelism false, 131072 tokens, key ***"
    monkeypatch.setenv("SHORT_NAMED", "abcd")
    snapshot = "abcd" + "0" * 60
    rec = append_record(RunRecord(run_id="r-abcd-8f3f570", command="train abcd", env=env, code_snapshot=snapshot,
                                  data_snapshots={"train": snapshot}, config={"env": env}), db,
                        secrets=["SHORT_NAMED"])
    stored = get_record("r-abcd-8f3f570", db)
    assert (stored.run_id, stored.code_snapshot, stored.data_snapshots) == ("r-abcd-8f3f570", snapshot,
                                                                            {"train": snapshot})
    assert stored.command == f"train {REDACTED}"
    assert stored.env == {"NUM_KEYS": "8", "TOKENIZERS_PARALLELISM": "false", "MAX_TOKENS": "131072",
                          "WANDB_API_KEY": REDACTED}
    assert rec.config["env"]["NUM_KEYS"] == "8"


def test_passwords_and_secrets_are_masked_however_short_or_numeric(db, monkeypatch):
    """The settings exemption (NUM_KEYS=8) is for names with KEY, TOKEN or AUTH only: a PIN-like or
    short password is still a password (a reviewer found `PGPASSWORD=84721953` left in the record)."""
    from fleet.masking import Masker
    monkeypatch.setenv("FLEET_SECRET_NAMES", "")
    env = {"PGPASSWORD": "84721953", "DB_PASSWORD": "admin", "API_SECRET": "s3cr3", "NUM_KEYS": "8"}
    masker = Masker.for_config(None, env=env)
    assert masker("pw 84721953 admin s3cr3, 8 keys") == "pw *** *** ***, 8 keys"
    rec = append_record(RunRecord(run_id="r-pw", command="train", env=env, code_snapshot="a" * 64), db)
    assert rec.env == {"PGPASSWORD": REDACTED, "DB_PASSWORD": REDACTED, "API_SECRET": REDACTED, "NUM_KEYS": "8"}


def test_passwords_under_their_short_names_are_redacted(db, monkeypatch):
    """DB_PASS, MYSQL_PWD (MySQL reads it) and GPG_PASSPHRASE are passwords as surely as
    DB_PASSWORD: they reached the record, the logs and `fleet runs show` as typed. PWD, BYPASS_CACHE
    and PASS_RATE are not."""
    from fleet.masking import Masker
    monkeypatch.setenv("FLEET_SECRET_NAMES", "")
    env = {"DB_PASS": "hunter22", "MYSQL_PWD": "s3cretpw", "GPG_PASSPHRASE": "correct horse",
           "PWD": "/work/exp", "BYPASS_CACHE": "true", "PASS_RATE": "0.95"}
    assert Masker.for_config(None, env=env)("login hunter22 s3cretpw correct horse in /work/exp at 0.95") == \
        "login *** *** *** in /work/exp at 0.95"
    rec = append_record(RunRecord(run_id="r-short", command="train", env=env, code_snapshot="a" * 64), db)
    assert rec.env == {"DB_PASS": REDACTED, "MYSQL_PWD": REDACTED, "GPG_PASSPHRASE": REDACTED,
                       "PWD": "/work/exp", "BYPASS_CACHE": "true", "PASS_RATE": "0.95"}
