"""The pool run of a sweep that gave back a machine early (fleet/sweep/shrink.py) still says what
it leased and billed: its run record and its run row count every machine of the pool (2), not the
one still up when the sweep ended (the record is what `fleet runs`/`fleet audit` show of what ran
on what; sweep.json already counted the machines leased)."""
from __future__ import annotations

import json
import os
import subprocess

from fleet.records.chain import get_record
from fleet.state import open_state
from tests.conftest import FLEET, processes_under


def test_the_pool_runs_record_counts_the_machines_it_gave_back(experiment, fleet_home):
    (experiment / "fleet.toml").write_text('project = "t"\ncommand = "true"\ntemplate = "local-1gpu"\n'
                                           'max_duration = "10m"\n')
    script = "if [ {x} = 1 ]; then sleep 8; fi; true"      # trial 1 outlives trials 2 and 3
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "GITHUB_ACTIONS")}
    proc = subprocess.run([FLEET, "sweep", "--param", "x=1,2,3", "--parallel", "2", "--json", "--",
                           "sh", "-c", script], cwd=experiment, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["machines"] == 2 and len(summary["released_early"]) == 1, summary   # one went early
    state = open_state()
    try:
        record = get_record(summary["pool_run_id"], state.db)
        run = next(r for r in state.list_runs(limit=100) if r["id"] == summary["pool_run_id"])
    finally:
        state.close()
    assert record.machines == 2, record.machines
    assert (run.get("meta") or {}).get("summary", {}).get("machines", 2) == 2, run.get("meta")
    assert processes_under(fleet_home) == []
