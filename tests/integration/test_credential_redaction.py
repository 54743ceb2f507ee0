"""A credential passed under a neutral name (`--env GH_PAT=ghp_…`, `HF=hf_…`, `OPENAI=sk-…`) is known
by its format: a CI job's log, `fleet runs show --json` and `fleet logs` never show it, while an
ordinary value beside it (`MODEL=sk-learn-like`, a path) is shown as it is."""
from __future__ import annotations

import json
import secrets as pysecrets

import pytest

from tests.conftest import run_fleet

pytestmark = pytest.mark.timeout(240)


def test_a_ci_job_and_the_run_record_never_show_a_credential_under_a_neutral_name(experiment, fleet_home):
    gh, hf = "ghp_" + pysecrets.token_hex(18), "hf_" + pysecrets.token_hex(17)
    openai = "sk-proj-A1" + pysecrets.token_hex(24)
    (experiment / "fleet.toml").write_text('project = "cred"\ntemplate = "local-1gpu"\nmax_duration = "10m"\n'
                                           'command = "echo pat=$GH_PAT hf=$HF openai=$OPENAI model=$MODEL data=$DATA"\n')
    gitlab = {"CI": "true", "GITLAB_CI": "true", "CI_PROJECT_PATH": "acme/vision"}
    proc = run_fleet(["up", "--gpus", "1", "--json", "--env", f"GH_PAT={gh}", "--env", f"HF={hf}",
                      "--env", f"OPENAI={openai}", "--env", "MODEL=sk-learn-like", "--env", "DATA=/data/hf_cache"],
                     cwd=experiment, env=gitlab)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_id = json.loads(proc.stdout)["run_id"]
    # The job's log: GitLab has no ::add-mask::, so what fleet prints is all the runner shows.
    assert "pat=*** hf=*** openai=*** model=sk-learn-like data=/data/hf_cache" in proc.stderr, proc.stderr
    shown = run_fleet(["runs", "show", run_id, "--json"], cwd=experiment)
    logs = run_fleet(["logs", run_id], cwd=experiment)
    for out in (proc.stdout + proc.stderr, shown.stdout + shown.stderr, logs.stdout + logs.stderr):
        assert gh not in out and hf not in out and openai not in out
    env = json.loads(shown.stdout)["env"]
    assert env["GH_PAT"] == env["HF"] == env["OPENAI"] == "<redacted>"
    assert env["MODEL"] == "sk-learn-like" and env["DATA"] == "/data/hf_cache"
    assert "model=sk-learn-like" in logs.stdout
