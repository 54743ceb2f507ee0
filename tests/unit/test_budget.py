"""Budget policy with a fake clock: money, prices, accrual, warn/stop, refusal, deadline, idle."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from fleet.money.budget import (Accrual, BudgetPolicy, IdlePolicy, Scope, budget_deadline, capped_deadline_s, cost_micro,
                          from_micro, month_start, parse_budget, refuse_unaffordable, require_price, resolve_price,
                          seconds_until_exhausted, to_micro)
from fleet.errors import BudgetRefused, ExitCode, UsageError
from fleet.models import Template
from tests.fixtures.ledger import FakeClock

T0 = datetime(2025, 6, 30, 23, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("value, expected", [("50", "50"), (50, "50"), ("$12.5", "12.5"), (Decimal("0.01"), "0.01")])
def test_budget_accepts_positive_dollars(value, expected):
    assert parse_budget(value) == Decimal(expected)


@pytest.mark.parametrize("value", ["-5", 0, "0", "abc", "", "NaN", "inf", True, None, "1e999999999"])
def test_budget_rejects_bad_values_with_one_line(value):
    with pytest.raises(UsageError) as info:
        parse_budget(value)
    assert info.value.exit_code == ExitCode.USAGE
    assert "\n" not in str(info.value) and "budget" in str(info.value)


def test_cost_is_exact_in_micro_dollars():
    assert cost_micro(to_micro("3.60"), 600) == to_micro("0.60")
    assert cost_micro(to_micro("32.7726"), 3600) == to_micro("32.7726")
    assert cost_micro(to_micro("1"), 0) == 0 and cost_micro(to_micro("1"), -5) == 0
    assert from_micro(1_234_567) == Decimal("1.234567")


def test_accrual_follows_the_fake_clock_and_stops_machines():
    clock = FakeClock(T0)
    acc = Accrual(clock)
    acc.start("m0", to_micro("3.60"))
    acc.start("m1", to_micro("3.60"))
    assert acc.burn_micro_per_hour() == to_micro("7.20")
    clock.advance(600)
    assert acc.spent_micro() == to_micro("1.20")
    acc.stop("m1")
    clock.advance(600)
    assert acc.spent_micro() == to_micro("1.80")
    assert acc.burn_micro_per_hour() == to_micro("3.60")


def _template(price=None, provider="aws", name="p4d.24xlarge"):
    return Template(name=name, provider=provider, gpus_per_machine=8,
                    price_per_hour=None if price is None else Decimal(price))


def test_local_templates_carry_a_shadow_price_and_overrides_win():
    local = resolve_price(_template("12.24", "local", "local-4gpu"))
    assert local.shadow and local.per_hour_micro == to_micro("12.24")
    aws = resolve_price(_template("32.7726"))
    assert not aws.shadow
    override = resolve_price(_template("32.7726"), {"p4d.24xlarge": Decimal("20")})
    assert override.per_hour_micro == to_micro("20") and "[prices]" in override.source


def test_unknown_price_refuses_with_how_to_set_it():
    with pytest.raises(BudgetRefused) as info:
        require_price(_template(None, "ssh", "team-a100"))
    assert info.value.exit_code == ExitCode.BUDGET_REFUSED == 6
    text = str(info.value)
    assert "team-a100" in text and "[prices]" in text and "fleet.toml" in text and "\n" not in text


def test_warns_once_at_80_percent_then_stops_when_only_grace_is_left():
    policy = BudgetPolicy([Scope("run", to_micro("10"))], grace_s=60)
    burn = to_micro("36")          # $0.60 per minute of grace
    assert policy.evaluate(to_micro("7.99"), burn).action == "ok"
    warn = policy.evaluate(to_micro("8.00"), burn)
    assert warn.action == "warn" and "80 %" in warn.message
    assert policy.evaluate(to_micro("8.50"), burn).action == "ok"   # warned once only
    assert policy.evaluate(to_micro("9.39"), burn).action == "ok"
    stop = policy.evaluate(to_micro("9.40"), burn)                   # $0.60 left = the grace period
    assert stop.action == "stop" and stop.scope == "run" and "$9.40 of $10.00" in stop.message
    assert policy.evaluate(to_micro("12"), burn).action == "stop"


def test_the_tightest_scope_binds():
    policy = BudgetPolicy([Scope("run", to_micro("100")), Scope("project 'x' (2025-06)", to_micro("50"),
                                                                  spent_before_micro=to_micro("45"))], grace_s=0)
    assert policy.remaining_micro(to_micro("1")) == to_micro("4")
    verdict = policy.evaluate(to_micro("5"), to_micro("1"))
    assert verdict.action == "stop" and verdict.scope.startswith("project")


def test_refused_up_front_when_minimum_billing_is_unaffordable():
    policy = BudgetPolicy([Scope("run", to_micro("0.50"))])
    with pytest.raises(BudgetRefused) as info:   # 60 s of $32.77/h = $0.55
        refuse_unaffordable(policy, price_micro_per_hour=to_micro("32.7726"), machines=1, provider="aws")
    assert "minimum billing" in str(info.value) and info.value.exit_code == 6
    refuse_unaffordable(policy, price_micro_per_hour=to_micro("1.006"), machines=8, provider="aws")
    spent = BudgetPolicy([Scope("user 'ana' (2025-06)", to_micro("100"), spent_before_micro=to_micro("100"))])
    with pytest.raises(BudgetRefused, match="user 'ana'"):
        refuse_unaffordable(spent, price_micro_per_hour=1, machines=1, provider="local")
    refuse_unaffordable(BudgetPolicy([]), price_micro_per_hour=to_micro("99"), machines=9, provider="aws")


def test_budget_becomes_a_deadline_that_caps_the_heartbeat():
    remaining, burn = to_micro("1"), to_micro("3.60")     # $1 at $3.60/h lasts 1000 s
    assert seconds_until_exhausted(remaining, burn) == 1000
    assert capped_deadline_s(300, remaining_micro=remaining, burn_micro_per_hour=burn) == 300
    assert capped_deadline_s(3600, remaining_micro=remaining, burn_micro_per_hour=burn) == 1000
    assert capped_deadline_s(3600, remaining_micro=remaining, burn_micro_per_hour=burn, max_left_s=90) == 90
    assert capped_deadline_s(3600, remaining_micro=-5, burn_micro_per_hour=burn) == 0
    assert capped_deadline_s(300, remaining_micro=None, burn_micro_per_hour=burn) == 300
    assert capped_deadline_s(300, remaining_micro=remaining, burn_micro_per_hour=0) == 300
    assert budget_deadline(T0, remaining, burn) == T0 + timedelta(seconds=1000)
    assert budget_deadline(T0, None, burn) is None


def test_calendar_month_is_utc():
    assert month_start(T0) == datetime(2025, 6, 1, tzinfo=timezone.utc)
    late = datetime(2025, 7, 1, 1, 0, tzinfo=timezone(timedelta(hours=5)))   # still June in UTC
    assert month_start(late) == datetime(2025, 6, 1, tzinfo=timezone.utc)


def test_idle_policy_needs_the_whole_window_below_threshold():
    clock = FakeClock(T0)
    idle = IdlePolicy(threshold_percent=10, minutes=5)
    assert not idle.observe(clock(), [2, 3])
    clock.advance(240)
    assert not idle.observe(clock(), [1, 0])
    clock.advance(30)
    assert not idle.observe(clock(), [50, 0])          # one busy GPU resets the window
    clock.advance(10)
    assert not idle.observe(clock(), [0, 0])
    clock.advance(299)
    assert not idle.observe(clock(), [0, 0])
    clock.advance(1)
    assert idle.observe(clock(), [0, 0])
    assert not idle.observe(clock(), [None])           # no telemetry never counts as idle
    assert not idle.observe(clock(), [])
    with pytest.raises(UsageError):
        IdlePolicy(0, 5)
