"""A credential under a neutral name (GH_PAT=ghp_…, HF=hf_…, OPENAI=sk-…) is secret by its format:
the name rules missed it, so it reached the run record, CI logs and Slurm's job environment as it
was. An ordinary value (a model name, a path, a short word) is not mistaken for one."""
from __future__ import annotations

import json
import secrets as pysecrets

import pytest

from fleet.masking import Masker, looks_credential
from fleet.records.chain import RunRecord, append_record
from fleet.state.db import Database

GH = "ghp_" + pysecrets.token_hex(18)
HF = "hf_" + pysecrets.token_hex(17)
OPENAI = "sk-proj-A1" + pysecrets.token_hex(24)
PEM = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA" + pysecrets.token_hex(20) + \
      "\n-----END OPENSSH PRIVATE KEY-----\n"
FORMATS = {"github": GH, "github-oauth": "gho_" + pysecrets.token_hex(18),
           "github-fine-grained": "github_pat_11" + pysecrets.token_hex(30), "gitlab": "glpat-" + pysecrets.token_hex(10),
           "slack": "xoxb-1234567890-" + pysecrets.token_hex(12), "aws": "AKIA" + pysecrets.token_hex(8).upper(),
           "huggingface": HF, "openai": OPENAI, "anthropic": "sk-ant-api03-" + pysecrets.token_hex(40),
           "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0." + pysecrets.token_hex(16), "pem": PEM}
ORDINARY = ["sk-learn-like", "sk-learn-linear-regression-classifier", "hf_datasets_cache", "/data/ghp_runs",
            "meta-llama/Llama-3-8B", "AKIA", "ghp_short", "xoxb-hello-world-friends", "true", "gpt-4o-mini",
            "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----"]


@pytest.mark.parametrize("value", FORMATS.values(), ids=FORMATS.keys())
def test_a_credential_is_known_by_its_format(value):
    assert looks_credential(value)


@pytest.mark.parametrize("value", ORDINARY)
def test_an_ordinary_value_is_not_taken_for_a_credential(value):
    assert not looks_credential(value)


def test_a_credential_inside_a_longer_value_is_not_matched_by_format_alone():
    """Anchored: a sentence or a path that holds such a word is not itself a credential."""
    assert not looks_credential(f"see {GH} here") and not looks_credential(f"/tmp/{HF}/x")


def test_the_run_record_redacts_credentials_under_neutral_names(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_SECRET_NAMES", "")
    db = Database(tmp_path / "state.db")
    try:
        env = {"GH_PAT": GH, "HF": HF, "OPENAI": OPENAI, "MODEL": "sk-learn-like", "DATA": "/data/hf_datasets_cache"}
        rec = append_record(RunRecord(run_id="r-1", command=f"train --token {GH}", config={"env": dict(env)},
                                      env=dict(env), code_snapshot="a" * 64), db)
        body = db.execute("SELECT body FROM run_records WHERE run_id = 'r-1'")[0]["body"]
    finally:
        db.close()
    for value in (GH, HF, OPENAI):
        assert value not in body
    assert rec.env["GH_PAT"] == rec.env["HF"] == rec.env["OPENAI"] == "<redacted>"
    assert rec.env["MODEL"] == "sk-learn-like" and rec.env["DATA"] == "/data/hf_datasets_cache"
    assert rec.command == "train --token <redacted>"


def test_the_masker_knows_them_from_env_the_environment_and_the_command():
    """[env] values, this process's environment (a shell expands `$GH_PAT` into the command), and a
    token typed into the command or setup."""
    typed = "hf_" + pysecrets.token_hex(17)
    config = type("C", (), {"env": {"GH_PAT": GH, "MODEL": "sk-learn-like"}, "secrets": [],
                            "command": f"python train.py --hf-token={typed}", "setup": None})()
    mask = Masker.for_config(config, {"OPENAI": OPENAI, "HOME": "/home/u"})
    line = f"{GH} {OPENAI} {typed} sk-learn-like /home/u"
    assert mask(line) == "*** *** *** sk-learn-like /home/u"
    assert f"::add-mask::{OPENAI}" in mask.github_commands()


def test_a_credential_word_inside_a_longer_value_is_masked_where_the_value_is_printed():
    """`[env] TRAIN_ARGS = "--token ghp_…"` and `AUTH_HEADER=Bearer …` in the environment: neither
    name nor whole value says secret, but the word in it does; masked, the rest of the value kept."""
    config = type("C", (), {"env": {"TRAIN_ARGS": f"--token {GH} --lr 3"}, "secrets": [], "command": "train",
                            "setup": None})()
    mask = Masker.for_config(config, {"HEADER": f"Bearer {OPENAI}", "HOME": "/home/u"})
    assert mask(f"args: --token {GH} --lr 3; header: Bearer {OPENAI}") == "args: --token *** --lr 3; header: Bearer ***"
    assert mask("--lr 3 /home/u") == "--lr 3 /home/u"


def test_a_private_key_inside_a_longer_value_is_masked():
    """A service account's JSON under a name that says nothing (`SA_JSON`): the key block in it is
    no word, so the words alone left it whole in every line that printed the value."""
    key = PEM.strip().replace("\n", "\\n")
    value = '{"type": "service_account", "private_key": "%s\\n", "client_email": "a@b.iam"}' % key
    mask = Masker.for_config(None, {"SA_JSON": value, "HOME": "/home/u"})
    assert mask(f"env SA_JSON={value}") == 'env SA_JSON={"type": "service_account", "private_key": "***\\n", ' \
                                           '"client_email": "a@b.iam"}'


def test_slurm_jobs_do_not_inherit_a_credential_under_a_neutral_name(monkeypatch):
    """Slurm exports the submitting environment into the job and its records."""
    from fleet.providers.slurm.tool_env import tool_env
    monkeypatch.setenv("GH_PAT", GH)
    monkeypatch.setenv("DEPLOY", PEM)
    monkeypatch.setenv("MODEL", "sk-learn-like")
    env = tool_env()
    assert not {"GH_PAT", "DEPLOY"} & set(env) and GH not in repr(env)
    assert env["MODEL"] == "sk-learn-like"


def test_slurms_own_jwt_still_reaches_its_tools(monkeypatch):
    """A cluster with auth/jwt authenticates squeue and sbatch by SLURM_JWT: taken for a credential by
    its format and dropped, every Slurm command fleet ran failed to authenticate."""
    from fleet.providers.slurm.tool_env import tool_env
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjE3MDAwMDAwMDAsInN1biI6ImFsaWNlIn0.c2lnbmF0dXJlX2J5dGVz"
    monkeypatch.setenv("SLURM_JWT", jwt)
    monkeypatch.setenv("OTHER_JWT_COPY", jwt)
    env = tool_env()
    assert env["SLURM_JWT"] == jwt and "OTHER_JWT_COPY" not in env


def test_a_private_key_read_out_of_a_longer_value_is_masked_where_the_program_saves_it(tmp_path):
    """The service account's JSON holds its key with `\\n` for each line break; the training reads
    the JSON and saves or prints the key as it is, line by line (`jq -r .private_key > key.pem`).
    Only the block as the value wrote it was masked: the key's lines reached the log and the
    outputs kept as the CI artifact in clear."""
    body = [pysecrets.token_hex(30) + "/+" + pysecrets.token_hex(1) for _ in range(3)]
    pem = "-----BEGIN PRIVATE KEY-----\n" + "\n".join(body) + "\n-----END PRIVATE KEY-----\n"
    value = '{"type": "service_account", "private_key": "%s"}' % pem.replace("\n", "\\n").replace("/", "\\/")
    mask = Masker.for_config(None, {"SA_JSON": value, "HOME": "/home/u"})
    saved = tmp_path / "key.pem"
    saved.write_text(pem)
    assert mask.scrub_file(saved)
    assert not any(line in saved.read_text() for line in body), saved.read_text()
    assert not any(line in mask(f"key: {pem}") for line in body)


@pytest.mark.parametrize("password", ['Tr0ub4dor"&3', "C:\\keys\\s3cret", "Pässwort-2024!"])
def test_a_secret_a_program_wrote_into_json_is_masked_in_the_file(tmp_path, password):
    """A training that dumps its settings to JSON (args.json, a metrics file keyed by them) writes a
    `"`, a `\\` or a letter beyond ASCII escaped: the value as given was nowhere in the file, and the
    fetched file, kept as the CI artifact, gave the password back to whoever read the JSON."""
    config = type("C", (), {"env": {}, "secrets": ["DB_PASSWORD"], "command": "train", "setup": None})()
    mask = Masker.for_config(config, {"DB_PASSWORD": password, "HOME": "/home/u"})
    dumped = tmp_path / "args.json"
    dumped.write_text(json.dumps({"db_password": password, "lr": 0.1}))
    assert mask.scrub_file(dumped)
    assert json.loads(dumped.read_text()) == {"db_password": "***", "lr": 0.1}
    assert json.loads(mask(json.dumps({"k": password}, ensure_ascii=False))) == {"k": "***"}
