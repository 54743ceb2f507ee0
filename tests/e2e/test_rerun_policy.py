"""`fleet rerun` replays what a record pins (command, code, data) under the limits of the place it is
rerun from: a red-team rerun ran past the project's monthly budget, which refused `fleet up` in the
same directory, because the rerun's configuration was built from the record alone."""
from __future__ import annotations

import json
import subprocess

from fleet.errors import ExitCode
from tests.conftest import run_fleet

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x", "PATH": "/usr/bin:/bin"}
TOML = 'project = "pin"\ncommand = "echo replayed"\ngpus = 1\nprovider = "local"\nmax_duration = "10m"\n'


def _commit(repo, message):
    for args in (["add", "."], ["commit", "-qm", message]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, env={**GIT_ENV, "HOME": str(repo)})


def test_a_rerun_is_held_to_the_monthly_budgets_of_its_directory(fleet_home, tmp_path):
    repo = tmp_path / "exp"
    repo.mkdir()
    (repo / "fleet.toml").write_text(TOML)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    _commit(repo, "exp")
    up = run_fleet(["up", "--ci", "--json", "--yes"], cwd=repo, timeout=180)
    assert up.returncode == 0, up.stderr[-2000:]
    run_id = json.loads(up.stdout)["run_id"]

    (repo / "fleet.toml").write_text(TOML + '[budgets]\nproject_monthly = 0.001\n[prices]\n"local-1gpu" = 36\n')
    _commit(repo, "a budget")
    refused = run_fleet(["up", "--ci", "--yes"], cwd=repo, timeout=120)
    assert refused.returncode == ExitCode.BUDGET_REFUSED, refused.stderr[-2000:]
    again = run_fleet(["rerun", run_id, "--ci", "--yes"], cwd=repo, timeout=120)
    assert again.returncode == ExitCode.BUDGET_REFUSED, again.stdout[-1000:] + again.stderr[-2000:]
    assert "budget for project 'pin'" in again.stderr and "Traceback" not in again.stderr
    assert "replayed" not in again.stdout + again.stderr


def test_a_rerun_takes_the_outputs_limit_of_its_directory(fleet_home, tmp_path):
    """A run with `outputs_max = "none"` and more than the default per machine came home whole;
    its rerun got the 100G default and ended `error`, exit 10 (review finding)."""
    from fleet.records.lineage import _under_local_policy
    from fleet.config.loader import load_config
    (tmp_path / "fleet.toml").write_text(TOML + 'outputs_max = "none"\n')
    here = load_config(cwd=tmp_path)
    assert here.outputs_max_bytes == 0
    from dataclasses import replace
    recorded = replace(here, outputs_max_bytes=100 << 30)
    assert _under_local_policy(recorded, tmp_path).outputs_max_bytes == 0
