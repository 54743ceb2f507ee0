"""A sweep keeps secret values out of what it prints and stores, as a run does: the summary on stdout
(--json and the table) and runs/<sweep>/sweep.json."""
from __future__ import annotations

import json
import os

from tests.conftest import run_fleet

CANARY = "canary-sweep-7f3a91"


def test_a_secret_typed_into_the_sweep_command_or_a_value_is_in_no_summary(experiment, fleet_home):
    (experiment / "fleet.toml").write_text('project = "t"\ncommand = "true"\ntemplate = "local-1gpu"\n'
                                           'max_duration = "10m"\nsecrets = ["MY_TOKEN"]\n')
    env = {**os.environ, "MY_TOKEN": CANARY}
    # The user's shell expanded $MY_TOKEN into the command; a parameter's value holds it too.
    proc = run_fleet(["sweep", "--json", "--param", f"tok=x{CANARY},plain", "--", "echo", CANARY, "{tok}"],
                     cwd=experiment, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert CANARY not in proc.stdout and CANARY not in proc.stderr
    sweep_json = experiment / "runs" / summary["sweep_id"] / "sweep.json"
    assert CANARY not in sweep_json.read_text()
    table = run_fleet(["sweep", "--param", f"tok=x{CANARY}", "--", "echo", "{tok}"], cwd=experiment,
                      timeout=180, env=env)
    assert table.returncode == 0, table.stderr[-3000:]
    assert CANARY not in table.stdout and CANARY not in table.stderr
