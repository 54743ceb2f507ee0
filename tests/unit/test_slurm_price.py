"""Slurm's price is a shadow price: the cluster bills fleet nothing per GPU-hour, so the budget counts
`[slurm] price_per_gpu_hour` but the ledger, the plan and the run's summary call it what the run
would cost, never money spent; no price configured means no price (a budget is refused, saying where
to set one). Slurm allocations bill from the first second (no cloud-style minute minimum)."""
from __future__ import annotations

from decimal import Decimal

import pytest

from fleet.errors import BudgetRefused
from fleet.money.budget import minimum_billing, require_price, resolve_price, to_micro
from fleet.providers.slurm.provider import SlurmProvider
from fleet.providers.slurm.settings import SlurmSettings


def test_a_configured_price_is_counted_as_a_shadow_price():
    t = SlurmProvider(SlurmSettings(price_per_gpu_hour=Decimal("2.5"))).templates()["slurm-2gpu"]
    price = resolve_price(t)
    assert price.shadow and price.per_hour_micro == to_micro("5.0")
    assert "shadow" in price.source and "price_per_gpu_hour" in price.source


def test_no_price_means_no_price_and_a_budget_is_refused():
    t = SlurmProvider(SlurmSettings()).templates()["slurm-1gpu"]
    assert resolve_price(t) is None
    with pytest.raises(BudgetRefused):
        require_price(t)


def test_slurm_bills_from_the_first_second():
    assert minimum_billing(to_micro("3600"), 1, "slurm") == (to_micro("1"), 1)
