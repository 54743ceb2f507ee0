"""`fleet report --reconcile` against moto's Cost Explorer (a real moto server on loopback), seeded
with billed results through moto's own API."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from fleet.money.budget import Price, to_micro
from fleet.errors import EnvironmentProblem
from fleet.money.ledger import Ledger
from fleet.report.reconcile import reconcile
from fleet.state.db import Database
from tests.fixtures.ledger import FakeClock, _Lease, _Machine

DAY = datetime(2025, 6, 3, tzinfo=timezone.utc)


def seed_cost_explorer(endpoint: str, groups: dict[str, str]) -> None:
    results = {"results": [{"ResultsByTime": [
        {"TimePeriod": {"Start": "2025-06-03", "End": "2025-06-04"}, "Total": {}, "Estimated": False,
         "Groups": [{"Keys": [f"fleet:project${p}"], "Metrics": {"UnblendedCost": {"Amount": a, "Unit": "USD"}}}
                    for p, a in groups.items()]}]}]}
    req = urllib.request.Request(f"{endpoint}/moto-api/static/ce/cost-and-usage-results",
                                 data=json.dumps(results).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 201


@pytest.fixture
def ledger(tmp_path):
    db = Database(tmp_path / "home" / "state.db")
    clock = FakeClock(DAY + timedelta(hours=9))
    led = Ledger(db, clock)
    for lease_id, project, provider, price in (("a", "vision", "aws", Price(to_micro("3.60"), "table")),
                                               ("b", "nlp", "aws", Price(to_micro("7.20"), "table")),
                                               ("c", "vision", "local", Price(to_micro("9"), "shadow", True))):
        le = _Lease(lease_id, project, "ana", "t", provider, [_Machine(f"{lease_id}-m", (0,))])
        segs = [led.open_segment(lease=le, machine=le.machines[0], price=price)]
        clock.advance(3600)
        led.close(segs)
    yield led
    db.close()


def test_reconcile_compares_billed_aws_cost_per_project(aws_env, ledger):
    seed_cost_explorer(aws_env, {"vision": "3.70", "nlp": "7.20", "audio": "1.25"})
    import boto3
    rows = reconcile(ledger, boto3.client("ce", region_name="us-east-1"), since=DAY, until=DAY + timedelta(days=1))
    by = {r.project: r for r in rows}
    assert set(by) == {"vision", "nlp", "audio"}
    assert by["vision"].ledger_usd == Decimal("3.60")            # the local "would cost" is not billed money
    assert by["vision"].difference_usd == Decimal("0.10")
    assert by["nlp"].difference_usd == 0
    assert by["audio"].ledger_usd == 0 and by["audio"].billed_usd == Decimal("1.25")


def test_cli_reconcile_json(aws_env, ledger, tmp_path):
    seed_cost_explorer(aws_env, {"vision": "3.60"})
    env = {**os.environ, "FLEET_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-m", "fleet.cli.main", "report", "--reconcile", "--json",
                          "--since", "2025-06-03", "--until", "2025-06-04"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = {r["project"]: r for r in json.loads(out.stdout)["reconcile"]}
    assert rows["vision"]["difference_usd"] == "0.000000"
    assert rows["nlp"]["ledger_usd"] == "7.200000" and rows["nlp"]["billed_usd"] == "0.000000"


def test_unreachable_cost_explorer_is_one_actionable_line(ledger):
    import boto3
    from botocore.config import Config
    client = boto3.client("ce", region_name="us-east-1", endpoint_url="http://127.0.0.1:9",
                          aws_access_key_id="x", aws_secret_access_key="y",
                          config=Config(retries={"max_attempts": 1}, connect_timeout=1))
    with pytest.raises(EnvironmentProblem, match="Cost Explorer is not reachable"):
        reconcile(ledger, client, since=DAY, until=DAY + timedelta(days=1), today=date(2025, 6, 10))
