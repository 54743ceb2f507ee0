"""`fleet run LEASE` is a run like `fleet up`'s (the same pipeline, without leasing or releasing):
metered into the ledger, recorded, and stopped by its budget. And every run record keeps its cost,
so `fleet audit RUN --md` shows it for a plain run, a --keep run and a run on a kept lease.

Prices are set in fleet.toml so money moves in seconds: local-1gpu at $36/h = $0.01/s per machine.
"""
from __future__ import annotations

import json
from decimal import Decimal

from fleet.money.ledger import Ledger
from fleet.state import open_state
from tests.conftest import processes_under, run_fleet

PRICED = '\n[budgets]\ngrace = "1s"\n\n[prices]\n"local-1gpu" = 36\n'


def _json(proc) -> dict:
    assert proc.stdout.strip(), proc.stderr
    return json.loads(proc.stdout)


def _ledger(lease_id: str, run_id: str):
    state = open_state()
    try:
        read = Ledger(state.db).read(lease_id=lease_id)
        assert not read.corrupt
        return [e for e in read.entries if e.run_id == run_id]
    finally:
        state.close()


def _audit_cost_line(run_id: str, cwd) -> str:
    proc = run_fleet(["audit", run_id, "--md"], cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    [line] = [x for x in proc.stdout.splitlines() if x.startswith("- **Cost**")]
    return line


def test_audit_shows_the_cost_of_a_run_a_kept_run_and_a_run_on_the_kept_lease(experiment, fleet_home):
    with open(experiment / "fleet.toml", "a") as f:
        f.write(PRICED)
    plain = _json(run_fleet(["up", "--json"], cwd=experiment))
    kept = _json(run_fleet(["up", "--keep", "5m", "--json"], cwd=experiment))
    assert plain["status"] == kept["status"] == "succeeded" and kept["kept_until"]
    lease_id = kept["lease_id"]
    proc = run_fleet(["run", lease_id, "--json", "--", "sh", "-c", "sleep 1; echo again"], cwd=experiment)
    assert proc.returncode == 0, proc.stderr
    again = _json(proc)
    assert (again["status"], again["lease_id"], again["released"]) == ("succeeded", lease_id, False)

    for summary in (plain, kept, again):
        cost = summary["would_cost_usd"]              # local machines: a shadow price, nothing billed
        assert Decimal(cost) > 0, summary
        assert _audit_cost_line(summary["run_id"], experiment) == \
            f"- **Cost**: ${cost} (would cost: these machines carry a shadow price, nothing was billed)"
        record = _json(run_fleet(["runs", "show", summary["run_id"], "--json"], cwd=experiment))
        assert record["cost_usd"] == cost and record["lease_id"] == summary["lease_id"]

    rows = _ledger(lease_id, again["run_id"])               # the run on the kept lease has its own segment
    assert [r.kind for r in rows if r.kind != "tick"] == ["open", "close"]
    assert sum(r.cost_micro for r in rows) == int(Decimal(again["would_cost_usd"]) * 1_000_000)
    assert [lease["id"] for lease in _json(run_fleet(["status", "--json"], cwd=experiment))["leases"]] == [lease_id]
    assert run_fleet(["down", lease_id], cwd=experiment).returncode == 0
    assert processes_under(fleet_home) == []


def test_a_budget_crossing_stops_a_run_on_a_kept_lease_and_the_lease_stays(experiment, fleet_home):
    with open(experiment / "fleet.toml", "a") as f:
        f.write(PRICED)
    kept = _json(run_fleet(["up", "--keep", "5m", "--json"], cwd=experiment))
    lease_id = kept["lease_id"]
    # $0.10 at $0.01/s, stopping while grace + margin (1 + 3 s) are still paid for: ~6 s in
    proc = run_fleet(["run", lease_id, "--budget", "0.10", "--json", "--", "sh", "-c", "echo started; sleep 120"],
                     cwd=experiment, timeout=120)
    assert proc.returncode == 11, proc.stderr
    summary = _json(proc)
    assert summary["status"] == "budget-stopped" and "budget for run reached" in summary["message"]
    assert summary["budget_usd"] == "0.10" and not summary["released"]
    spent = Decimal(summary["would_cost_usd"])
    assert Decimal("0.05") <= spent <= Decimal("0.11"), spent        # never more than a tick over
    record = _json(run_fleet(["runs", "show", summary["run_id"], "--json"], cwd=experiment))
    assert record["status"] == "budget-stopped" and record["cost_usd"] == summary["would_cost_usd"]
    rows = _ledger(lease_id, summary["run_id"])
    assert [r.kind for r in rows if r.kind != "tick"] == ["open", "close"]
    [lease] = _json(run_fleet(["status", "--json"], cwd=experiment))["leases"]   # still kept, still up
    assert lease["id"] == lease_id and lease["health"] == "up"
    assert run_fleet(["down", lease_id], cwd=experiment).returncode == 0
    assert processes_under(fleet_home) == []
