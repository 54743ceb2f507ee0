"""`fleet up --exit-code-from RANK`: the experiment's own code on that rank, every rank's code in the
summary, and fleet's own code when the command never ran to its end."""
from __future__ import annotations

import json

import pytest

from tests.conftest import run_fleet

pytestmark = pytest.mark.timeout(180)


def test_exit_code_from_a_rank(tmp_path, fleet_home):
    (tmp_path / "fleet.toml").write_text('project = "codes"\nmax_duration = "5m"\n'
                                         'command = "exit $((FLEET_NODE_RANK * 3))"\n')
    plain = run_fleet(["up", "--gpus", "8", "--json", "--allow-dirty"], cwd=tmp_path)
    summary = json.loads(plain.stdout)
    assert plain.returncode == 3 and summary["status"] == "failed", plain.stderr
    assert summary["rank_exit_codes"] == {"0": 0, "1": 3} and summary["failing_rank"] == "1"
    rank0 = run_fleet(["up", "--gpus", "8", "--exit-code-from", "0", "--allow-dirty"], cwd=tmp_path)
    assert rank0.returncode == 0, rank0.stderr
    unknown = run_fleet(["up", "--gpus", "8", "--exit-code-from", "7", "--allow-dirty"], cwd=tmp_path)
    assert unknown.returncode == 3
    assert "--exit-code-from 7: no such rank (ranks: 0, 1)" in unknown.stderr
    # fleet's own refusal is fleet's code, whatever rank is named
    refused = run_fleet(["up", "--gpus", "8", "--exit-code-from", "0", "--budget", "0.000001", "--allow-dirty"],
                        cwd=tmp_path)
    assert refused.returncode == 6, refused.stderr
