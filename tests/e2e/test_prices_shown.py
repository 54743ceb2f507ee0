"""What a machine is billed at is what fleet shows for it: with `[prices] "local-1gpu" = 36`, the
meter billed $36/h while `fleet status --json` and summary.json's `launched` showed the template's
list price, 1.006 (red-team finding)."""
from __future__ import annotations

import json
from decimal import Decimal

from tests.conftest import run_fleet


def test_status_and_summary_show_the_price_prices_sets(tmp_path, fleet_home):
    (tmp_path / "fleet.toml").write_text('project = "priced"\ntemplate = "local-1gpu"\ncommand = "true"\n'
                                         '[prices]\n"local-1gpu" = 36\n')
    up = run_fleet(["up", "--keep", "2m", "--json", "--allow-dirty", "--yes"], cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    summary = json.loads(up.stdout)
    try:
        assert [Decimal(m["price_per_hour"]) for m in summary["launched"]] == [Decimal(36)], summary["launched"]
        status = json.loads(run_fleet(["status", "--json"], cwd=tmp_path).stdout)
        [lease] = [v for v in status["leases"] if v["id"] == summary["lease_id"]]
        assert [Decimal(m["price_per_hour"]) for m in lease["machines"]] == [Decimal(36)], lease["machines"]
    finally:
        assert run_fleet(["down", summary["lease_id"]], cwd=tmp_path).returncode == 0
