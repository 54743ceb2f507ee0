"""The CLI end to end: `fleet up` pins a git commit, `fleet rerun` reproduces the outputs byte for
byte, tampering with a record or deleting a chunk is caught and named."""
from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess

import pytest

from tests.conftest import DIGITS, run_fleet

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x", "PATH": "/usr/bin:/bin"}


@pytest.fixture
def digits_repo(tmp_path):
    """The quickstart example committed in its own repository (so it is clean and pinnable)."""
    repo = tmp_path / "repo"
    shutil.copytree(DIGITS, repo / "digits", ignore=shutil.ignore_patterns("runs", "__pycache__", "outputs"))
    (repo / "digits" / "fleet.toml").write_text(
        (repo / "digits" / "fleet.toml").read_text().replace('#:schema ../../fleet/fleet.schema.json\n', ""))
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "digits"]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, env={**GIT_ENV, "HOME": str(repo)})
    return repo / "digits"


def _output_hashes(home, run_id):
    out = run_fleet(["runs", "show", run_id, "--json"], cwd=home)
    rec = json.loads(out.stdout)
    show = run_fleet(["snapshot", "show", rec["output_snapshot"], "--json", "--store", rec["store"]], cwd=home)
    return rec, {e["path"]: e["sha256"] for e in json.loads(show.stdout)["entries"] if e["type"] == "file"}


@pytest.mark.slow
def test_up_then_rerun_reproduces_outputs_and_tamper_is_caught(fleet_home, digits_repo):
    up = run_fleet(["up", "--gpus", "2", "--ci", "--json"], cwd=digits_repo, timeout=300)
    assert up.returncode == 0, up.stderr[-2000:]
    first = json.loads(up.stdout)
    rec, hashes = _output_hashes(digits_repo, first["run_id"])
    assert len(rec["code_commit"]) == 40 and rec["code_subdir"] == "digits"
    assert any(p.endswith("metrics.json") for p in hashes)

    again = run_fleet(["rerun", first["run_id"], "--ci", "--json"], cwd=digits_repo, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    second = json.loads(again.stdout)
    assert second["outputs_identical"] is True, second.get("outputs_differ")
    rec2, hashes2 = _output_hashes(digits_repo, second["run_id"])
    assert hashes2 == hashes and rec2["rerun_of"] == first["run_id"]
    assert rec2["code_snapshot"] == rec["code_snapshot"] and rec2["prev_hash"] == rec["hash"]

    ok = run_fleet(["audit", "--verify"], cwd=digits_repo)
    assert ok.returncode == 0 and "chain intact" in ok.stdout
    md = run_fleet(["audit", first["run_id"], "--md"], cwd=digits_repo)
    assert rec["code_commit"] in md.stdout and "| output |" in md.stdout

    # Tamper: someone "fixes" the first run's exit status in the database.
    db = sqlite3.connect(fleet_home / "state.db")
    body = json.loads(db.execute("SELECT body FROM run_records WHERE run_id = ?", (first["run_id"],)).fetchone()[0])
    body["exit_status"] = 0
    body["command"] = "python train.py --better"
    db.execute("UPDATE run_records SET body = ? WHERE run_id = ?", (json.dumps(body), first["run_id"]))
    db.commit()
    db.close()
    bad = run_fleet(["audit", "--verify"], cwd=digits_repo)
    assert bad.returncode == 5
    assert f"(run {first['run_id']}) was modified" in bad.stderr
    assert bad.stderr.count("fleet: error:") == 1


@pytest.mark.slow
def test_rerun_refuses_when_a_chunk_is_gone(fleet_home, tmp_path):
    exp = tmp_path / "exp"
    (exp / "data").mkdir(parents=True)
    (exp / "data" / "x.txt").write_text("input\n")
    (exp / "fleet.toml").write_text('project = "t"\ncommand = "cat $FLEET_DATA/train/x.txt"\n'
                                    'template = "local-1gpu"\nmax_duration = "5m"\n[data]\ntrain = "data"\n')
    up = run_fleet(["up", "--ci", "--json"], cwd=exp, timeout=200)
    assert up.returncode == 0, up.stderr[-2000:]
    run_id = json.loads(up.stdout)["run_id"]
    rec = json.loads(run_fleet(["runs", "show", run_id, "--json"], cwd=exp).stdout)
    manifest = json.loads((fleet_home / "store" / "manifests" / rec["data_snapshots"]["train"]).read_text())
    h = manifest["entries"][0]["chunks"][0][0]
    (fleet_home / "store" / "chunks" / h[:2] / h).unlink()
    again = run_fleet(["rerun", run_id, "--ci"], cwd=exp, timeout=200)
    assert again.returncode == 5
    assert f"chunk {h[:12]} of x.txt is missing" in again.stderr
    assert "lease:" not in again.stderr       # refused before any machine was leased
    verify = run_fleet(["audit", "--verify"], cwd=exp)
    assert verify.returncode == 5 and "data:train" in verify.stderr
