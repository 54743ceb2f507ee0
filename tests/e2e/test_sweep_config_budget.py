"""fleet.toml's `budget` caps a sweep as it caps `fleet up`: a sweep without a budget of its own
(no --budget, no [sweep] budget) dropped it, and ran its trials to twice the budget the same
fleet.toml stopped a run at."""
from __future__ import annotations

import json

from tests.conftest import processes_under, run_fleet


def test_the_configs_budget_caps_a_sweep_without_one_of_its_own(experiment, fleet_home):
    (experiment / "fleet.toml").write_text(
        'project = "t"\ncommand = "true"\ntemplate = "local-1gpu"\nmax_duration = "10m"\nbudget = 0.05\n'
        '[budgets]\ngrace = "1s"\n[prices]\n"local-1gpu" = 36\n')      # $0.01 a second
    # Each trial may cost up to $0.05 (its 5 s timeout): with the pool's boot already paid out of
    # $0.05, none fits.
    proc = run_fleet(["sweep", "--param", "x=1,2,3", "--trial-timeout", "5s", "--json", "--", "sleep", "3"],
                     cwd=experiment, timeout=180)
    summary = json.loads(proc.stdout)
    assert proc.returncode == 11, proc.stderr[-3000:]
    assert summary["status"] == "budget-stopped" and summary["budget_usd"] == "0.05"
    assert [t["state"] for t in summary["trials"]] == ["not-started"] * 3
    assert "sweep budget has" in summary["trials"][0]["reason"]
    assert processes_under(fleet_home) == []
