"""A budget is parsed once, by the config checker (fleet.toml and `--budget` alike); the budget
gate reads the Decimals it produced."""
from __future__ import annotations

from decimal import Decimal

import pytest

from fleet.config.loader import load_config
from fleet.errors import UsageError
from fleet.money.metering import BudgetLimits


def test_budget_limits_are_the_configs_parsed_amounts(tmp_path):
    (tmp_path / "fleet.toml").write_text('command = "true"\nbudget = "$12.50"\n\n[budgets]\nuser_monthly = 40\n')
    config = load_config(tmp_path / "fleet.toml", overrides={"budget": "7"})
    limits = BudgetLimits.from_config(config)
    assert (limits.run, limits.user_monthly, limits.project_monthly) == (Decimal(7), Decimal(40), None)


@pytest.mark.parametrize("budget", ["1000000000000", "0", "-3", "ten"])
def test_implausible_or_bad_budgets_are_refused_by_the_config_checker_in_one_line(tmp_path, budget):
    with pytest.raises(UsageError) as info:
        load_config(None, cwd=tmp_path, overrides={"command": "true", "budget": budget})
    assert "budget" in str(info.value) and "\n" not in str(info.value)
