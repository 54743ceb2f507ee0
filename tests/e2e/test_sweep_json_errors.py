"""`fleet sweep --json` refused in one line like `fleet up --json`, but printed nothing on stdout: a
script reading it found nothing to parse. It prints one JSON document however the sweep ends."""
from __future__ import annotations

import json

import pytest

from tests.conftest import run_fleet


@pytest.mark.parametrize("args,says", [(["--param", "x"], "--param 'x': expected NAME=VALUE"),
                                       (["--param", "x=1", "--budget", "abc"], "--budget: must be an amount")])
def test_a_refused_sweep_still_prints_one_json_document(experiment, fleet_home, args, says):
    proc = run_fleet(["sweep", "--json", *args, "--", "true"], cwd=experiment)
    assert proc.returncode == 2, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["status"] == "error" and doc["exit_code"] == 2 and says in doc["message"], doc
    assert proc.stderr.count("fleet: error:") == 1, proc.stderr
