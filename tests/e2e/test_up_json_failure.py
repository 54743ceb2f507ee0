"""`fleet up --json`: stdout carries one JSON document however the run ends. A run refused before
it had a summary (a bad setting, a budget it cannot meet) printed nothing there, so a script (a CI
step saving `fleet up --json > summary.json`) had an empty file to parse."""
from __future__ import annotations

import json

from tests.conftest import run_fleet


def test_a_run_refused_before_it_starts_still_prints_its_ending_as_json(experiment, fleet_home):
    proc = run_fleet(["up", "--json", "--gpus", "1", "--max-duration", "forever"], cwd=experiment, timeout=120)
    assert proc.returncode == 2, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["status"] == "error" and doc["exit_code"] == 2
    assert "--max-duration" in doc["message"] and "\n" not in doc["message"]
    assert proc.stderr.count("fleet: error:") == 1      # the one line, as without --json


def test_a_run_that_is_fine_prints_only_its_summary(experiment, fleet_home):
    proc = run_fleet(["up", "--json", "--gpus", "1"], cwd=experiment, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["status"] == "succeeded"
