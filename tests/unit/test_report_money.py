"""Money as fleet prints it (budget messages, `fleet budget`, reports) and simulated machines' cost:
amounts never round into a falsehood ("has $0.00 left"), and runs on simulated infrastructure
(local machines, the AWS sandbox on moto) are "would cost" in every report format, never billed."""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from fleet.money.budget import BudgetPolicy, Scope, format_usd, refuse_unaffordable, resolve_price, to_micro
from fleet.errors import BudgetRefused
from fleet.money.ledger import Ledger
from fleet.models import Template
from fleet.report import build_report, render
from fleet.state.db import Database
from tests.fixtures.ledger import FakeClock, _Lease, _Machine

T0 = datetime(2026, 12, 2, 8, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("micro, text", [
    (0, "$0.00"), (to_micro("12.34"), "$12.34"), (to_micro("0.5"), "$0.50"), (to_micro("0.03"), "$0.03"),
    (to_micro("0.0042"), "$0.0042"), (to_micro("0.029912"), "$0.0299"), (1, "$0.000001"),
    (to_micro("1234.567"), "$1,234.57"), (-to_micro("0.0042"), "-$0.0042"), (4200.4, "$0.0042"),
])
def test_amounts_keep_enough_digits_to_be_true(micro, text):
    assert format_usd(micro) == text


def test_a_refusal_over_a_tiny_budget_says_the_real_amounts():
    policy = BudgetPolicy([Scope("run", to_micro("0.0042"))])
    with pytest.raises(BudgetRefused) as info:        # 60 s of $1.006/h = $0.016767
        refuse_unaffordable(policy, price_micro_per_hour=to_micro("1.006"), machines=1, provider="aws")
    text = str(info.value)
    assert "has $0.0042 left" in text and "cost at least $0.0168" in text and "$0.00 " not in text
    assert "at $1.01/h" in text


def test_a_stop_message_over_a_tiny_budget_says_the_real_amounts():
    policy = BudgetPolicy([Scope("run", to_micro("0.03"))], grace_s=0)
    verdict = policy.evaluate(to_micro("0.0300"), to_micro("1"))
    assert verdict.action == "stop" and "$0.03 of $0.03" in verdict.message
    warn = BudgetPolicy([Scope("run", to_micro("0.03"))], grace_s=0).evaluate(to_micro("0.0251"), 1)
    assert warn.action == "warn" and warn.message.startswith("$0.0251 of the $0.03 budget")


def sandbox_template() -> Template:
    """What the AWS provider offers in sandbox mode (FLEET_AWS_SANDBOX=1, moto): simulated GPUs."""
    return Template(name="aws-8gpu", provider="aws", gpus_per_machine=8, gpu_model="L4", simulated_gpus=True,
                    price_per_hour=Decimal("14.1888"), price_source="cheapest mix for 8 GPUs, table (2026-11)")


def test_simulated_machines_carry_a_shadow_price_billed_ones_do_not():
    assert resolve_price(sandbox_template()).shadow
    assert resolve_price(sandbox_template(), {"aws-8gpu": Decimal("2")}).shadow        # [prices] override too
    real = Template(name="aws-8gpu", provider="aws", gpus_per_machine=8, price_per_hour=Decimal("14.1888"))
    assert not resolve_price(real).shadow


@pytest.fixture
def sandbox_ledger(tmp_path):
    db = Database(tmp_path / "state.db")
    clock = FakeClock(T0)
    ledger = Ledger(db, clock)
    lease = _Lease("l-sbx", "vision", "ana", "aws-8gpu", "aws", [_Machine("i-0abc", tuple(range(8)))])
    seg = ledger.open_segment(lease=lease, machine=lease.machines[0], price=resolve_price(sandbox_template()),
                              run_id="r-sbx")
    clock.advance(3600)
    ledger.close([seg])                                    # one hour at $14.1888: would cost, not billed
    yield ledger
    db.close()


def test_sandbox_runs_are_never_billed_dollars_in_any_report_format(sandbox_ledger):
    rep = build_report(sandbox_ledger, by="project")
    assert rep.total.cost_micro == 0 and rep.total.would_cost_micro == to_micro("14.1888")
    data = json.loads(render(rep, "json"))
    assert Decimal(data["total"]["cost_usd"]) == 0 and Decimal(data["total"]["would_cost_usd"]) == Decimal("14.1888")
    row = next(csv.DictReader(io.StringIO(render(rep, "csv"))))
    assert Decimal(row["cost_usd"]) == 0 and Decimal(row["would_cost_usd"]) == Decimal("14.1888")
    assert "| vision | $0.00 | $14.19 |" in render(rep, "md")
    table = render(rep, "table")
    assert "$14.19" in table and "AWS sandbox" in table
    page = render(rep, "html")
    assert "$14.19" in page and "AWS sandbox" in page


def test_one_gpu_is_not_gpus_in_the_ci_summary():
    from fleet.ci_report import markdown
    base = {"run_id": "r-1", "status": "succeeded", "exit_code": 0, "duration_s": 60, "machines": 1,
            "template": "local-1gpu", "provider": "local", "would_cost_usd": "0.0042", "released": True}
    assert "(1 GPU, local)" in markdown({**base, "gpus": 1}, [])
    assert "(2 GPUs, local)" in markdown({**base, "gpus": 2}, [])
