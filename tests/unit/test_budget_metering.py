"""The controller's run meter with a fake clock: refusal up front, accrual into the ledger each tick,
stop at the crossing, deadline capped by budget exhaustion, monthly budgets shared across runs."""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from fleet.money.budget import IdlePolicy, cost_micro, to_micro
from fleet.errors import BudgetRefused
from fleet.money.ledger import Ledger
from fleet.money.metering import BudgetLimits, RunMeter, prepare_budget
from fleet.models import Plan, Template
from fleet.state.db import Database
from tests.fixtures.ledger import FakeClock, _Lease, _Machine

T0 = datetime(2025, 6, 10, 12, 0, tzinfo=timezone.utc)
LOCAL = Template("local-4gpu", "local", 4, simulated_gpus=True, price_per_hour=Decimal("3.60"),
                 price_source="shadow: g5.12xlarge")


@pytest.fixture
def ledger(tmp_path):
    db = Database(tmp_path / "state.db")
    yield Ledger(db, FakeClock(T0))
    db.close()


def plan(template=LOCAL, machines=2, project="vision", user="ana"):
    return Plan(provider=template.provider, template=template, gpus=machines * 4, machine_count=machines,
                max_duration_s=3600, heartbeat_ttl_s=60, project=project, user=user)


def lease(machines=2, lease_id="l-1", project="vision", user="ana"):
    return _Lease(lease_id, project, user, "local-4gpu", "local",
                  [_Machine(f"{lease_id}-m{i}", (0, 1, 2, 3)) for i in range(machines)])


def test_no_budget_means_no_policy_and_no_price_needed(ledger):
    unpriced = Template("team-a100", "ssh", 8)
    assert prepare_budget(BudgetLimits(), plan(unpriced), ledger=ledger) == (None, None)


def test_budget_without_a_price_is_refused(ledger):
    unpriced = Template("team-a100", "ssh", 8)
    with pytest.raises(BudgetRefused, match=r"\[prices\]"):
        prepare_budget(BudgetLimits(run=Decimal(10)), plan(unpriced), ledger=ledger)


def test_run_crosses_its_budget_and_is_stopped_within_one_tick(ledger):
    clock = ledger.clock
    limits = BudgetLimits(run=Decimal("1.00"), grace_s=20)
    policy, price = prepare_budget(limits, plan(), ledger=ledger, now=clock())
    assert price.shadow and price.per_hour_micro == to_micro("3.60")
    meter = RunMeter(ledger, policy, limits=limits, clock=clock)
    meter.start(lease(), price, run_id="r-1")
    # two machines at $3.60/h burn $0.002/s; $1 lasts 500 s; stop when only grace (20 s = $0.04) is left
    assert meter.deadline_s(3600) == 500
    verdicts = []
    while True:
        clock.advance(5)
        v = meter.tick()
        verdicts.append(v.action)
        if v.action == "stop":
            break
    elapsed = (clock() - T0).total_seconds()
    assert 480 <= elapsed <= 485                            # the crossing (480 s) found within one tick
    assert "warn" in verdicts and verdicts.count("warn") == 1
    assert meter.deadline_s(3600) == pytest.approx(500 - elapsed, abs=1)
    clock.advance(20)                                        # grace, outputs fetched, released
    total = meter.finish()
    assert total == ledger.spent_micro()
    assert abs(total - to_micro("1.00")) <= cost_micro(meter_burn := to_micro("7.20"), 5) + 1
    assert meter_burn and not any(not s.closed for s in meter.segments)


def test_monthly_project_budget_counts_other_runs_this_month(ledger):
    clock = ledger.clock
    limits = BudgetLimits(project_monthly=Decimal("2.00"), grace_s=0)
    # an earlier run this month spent $1.50
    other = RunMeter(ledger, None, clock=clock)
    other.start(lease(1, "l-old"), prepare_budget(limits, plan(machines=1), ledger=ledger, now=clock())[1])
    clock.advance(1500)
    other.finish()
    policy, price = prepare_budget(limits, plan(), ledger=ledger, now=clock(), run_id="r-2")
    assert policy.scopes[0].spent_before_micro == to_micro("1.50")
    meter = RunMeter(ledger, policy, limits=limits, clock=clock)
    meter.start(lease(2, "l-new"), price, run_id="r-2")
    assert meter.deadline_s(3600) == 250                    # $0.50 left at $7.20/h
    clock.advance(200)
    assert meter.tick().action == "warn"
    clock.advance(60)
    v = meter.tick()
    assert v.action == "stop" and v.scope.startswith("project 'vision'")


def test_exhausted_monthly_budget_refuses_up_front(ledger):
    clock = ledger.clock
    meter = RunMeter(ledger, None, clock=clock)
    meter.start(lease(2, "l-old"), prepare_budget(BudgetLimits(run=Decimal(99)), plan(), ledger=ledger)[1])
    clock.advance(3600)
    meter.finish()                                           # $7.20 this month
    with pytest.raises(BudgetRefused, match="project 'vision'"):
        prepare_budget(BudgetLimits(project_monthly=Decimal("7.20")), plan(), ledger=ledger, now=clock())
    # another project is unaffected
    prepare_budget(BudgetLimits(project_monthly=Decimal("7.20")), plan(project="nlp"), ledger=ledger, now=clock())


def test_idle_policy_stops_a_run_with_idle_gpus(ledger):
    clock = ledger.clock
    utils = {"value": [0.0, 1.0]}
    meter = RunMeter(ledger, None, clock=clock, idle=IdlePolicy(5, 1), latest_utilisations=lambda: utils["value"])
    meter.start(lease(1), None)
    for _ in range(6):                   # first idle sample at 10 s: the minute runs from there
        clock.advance(10)
        assert meter.tick().action == "ok"
    clock.advance(10)
    v = meter.tick()
    assert v.action == "stop" and v.scope == "idle" and "idle policy" in v.message


def test_ledger_rows_are_written_every_persist_interval_but_the_budget_is_checked_every_tick(ledger):
    clock = ledger.clock
    limits = BudgetLimits(run=Decimal("0.10"), grace_s=0)
    policy, price = prepare_budget(limits, plan(machines=1), ledger=ledger, now=clock())
    meter = RunMeter(ledger, policy, limits=limits, clock=clock, persist_every_s=10)
    meter.start(lease(1), price)                             # $0.001/s: $0.10 lasts 100 s
    seconds = 0
    while meter.tick().action != "stop":
        clock.advance(1)
        seconds += 1
    assert seconds == 100                                    # caught on the exact tick, not the 10 s write
    rows = ledger.read().entries
    assert len(rows) == 1 + 10                               # open + one row per 10 s
    assert meter.spent_micro() == to_micro("0.10") and ledger.spent_micro() == to_micro("0.10")
    clock.advance(4)
    meter.finish()
    assert ledger.spent_micro() == to_micro("0.104")


def test_a_controller_stopped_past_the_machines_deadline_bills_up_to_that_deadline(ledger):
    """SIGSTOP, Ctrl-Z or a sleeping laptop: the machines' watchdogs ended them at the deadline the
    last beat gave, and the meter, ticking again on waking, billed every second it slept as well."""
    from datetime import timedelta
    clock = ledger.clock
    limits = BudgetLimits(run=Decimal("10.00"), grace_s=20)
    policy, price = prepare_budget(limits, plan(), ledger=ledger, now=clock())
    held = [T0 + timedelta(seconds=60)]             # the deadline the machines hold, as the heartbeat reports it
    meter = RunMeter(ledger, policy, limits=limits, clock=clock, ends_by=lambda now: held[0])
    meter.start(lease(), price, run_id="r-1")
    clock.advance(30)
    meter.tick()
    clock.advance(3600)                             # stopped for an hour; the machines ended 30 s in
    assert meter.spent_micro() == cost_micro(to_micro("7.20"), 60)
    assert meter.tick().action == "ok"              # no budget crossed by time nobody paid for
    assert meter.finish() == cost_micro(to_micro("7.20"), 60) == ledger.spent_micro()
    assert {r.end_at for r in ledger.read().entries if r.kind == "close"} == {"2025-06-10T12:01:00.000000Z"}


def test_a_deadline_heard_late_bills_the_time_in_between(ledger):
    """A beat that reached the machines after all (their deadline moved on): the time the meter held
    back at the old deadline is billed from the last row, none of it lost."""
    from datetime import timedelta
    clock = ledger.clock
    held = [T0 + timedelta(seconds=60)]
    policy, price = prepare_budget(BudgetLimits(run=Decimal("10.00")), plan(machines=1), ledger=ledger, now=clock())
    meter = RunMeter(ledger, policy, clock=clock, ends_by=lambda now: held[0])
    meter.start(lease(machines=1), price, run_id="r-1")
    clock.advance(100)
    meter.tick()
    held[0] = T0 + timedelta(seconds=400)
    clock.advance(100)
    assert meter.finish() == cost_micro(to_micro("3.60"), 200) == ledger.spent_micro()
