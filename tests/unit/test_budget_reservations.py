"""Budget reservations with a fake clock: how much a reservation holds, how much is reserved, when it
stops counting, and that both the up-front check and the running accrual honour other runs' claims."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from fleet.money.budget import to_micro
from fleet.money.reservations import (PENDING_S, Reservations, held_micro, is_live, reservation_amount,
                                       scope_lock_key)
from fleet.errors import BudgetRefused, ExitCode
from fleet.money.ledger import Ledger
from fleet.money.metering import BudgetLimits, RunMeter, prepare_budget
from fleet.models import Plan, Template
from fleet.state.db import Database
from tests.fixtures.ledger import FakeClock, _Lease, _Machine

T0 = datetime(2025, 6, 10, 12, 0, tzinfo=timezone.utc)
# $36/h per machine: 60 s minimum billing = $0.60; one hour = $36.
BOX = Template("box", "aws", 1, price_per_hour=Decimal(36), price_source="price table")


@pytest.fixture
def db(tmp_path):
    db = Database(tmp_path / "state.db")
    yield db
    db.close()


@pytest.fixture
def clock():
    return FakeClock(T0)


def plan(machines=1, project="vision", user="ana", max_s=3600):
    return Plan(provider="aws", template=BOX, gpus=machines, machine_count=machines, max_duration_s=max_s,
                heartbeat_ttl_s=60, project=project, user=user)


def admit(db, clock, limits, lease_id, **kw):
    return prepare_budget(limits, plan(**kw), ledger=Ledger(db, clock), now=clock(), run_id=f"r-{lease_id}",
                          reservations=Reservations(db, clock), lease_id=lease_id)


def lease_row(db, clock, lease_id, status="active", deadline_s=3600, project="vision", user="ana"):
    """The lease row the pipeline records right after the check (times from the fake clock)."""
    now = clock()
    db.execute("INSERT INTO leases (id, provider, template, project, owner, status, created_at, deadline,"
               " max_deadline, heartbeat_ttl_s) VALUES (?,?,?,?,?,?,?,?,?,?)",
               (lease_id, "aws", "box", project, user, status, now.isoformat(),
                (now + timedelta(seconds=deadline_s)).isoformat(), (now + timedelta(hours=4)).isoformat(), 60))


def reserved(db, lease_id):
    return db.execute("SELECT amount_micro, minimum_micro, released_at, spent_micro FROM budget_reservations"
                      " WHERE lease_id = ?", (lease_id,))


# -- arithmetic -------------------------------------------------------------------------------------
def test_a_reservation_holds_only_what_its_lease_has_not_spent_yet():
    assert held_micro(6_000_000, 0) == 6_000_000
    assert held_micro(6_000_000, 2_500_000) == 3_500_000
    assert held_micro(6_000_000, 9_000_000) == 0          # spent past it: the ledger counts it, not twice
    assert held_micro(6_000_000, -5) == 6_000_000          # a damaged negative sum frees nothing


def test_reservation_amount_is_the_estimate_capped_by_room_never_below_the_minimum():
    assert reservation_amount(minimum_micro=600_000, estimate_micro=36_000_000, room_micro=3_000_000) == 3_000_000
    assert reservation_amount(minimum_micro=600_000, estimate_micro=1_000_000, room_micro=9_000_000) == 1_000_000
    assert reservation_amount(minimum_micro=600_000, estimate_micro=300_000, room_micro=9_000_000) == 600_000


def test_scope_lock_keys_are_stable_signed_64_bit_and_distinct_per_scope():
    a, b = scope_lock_key("project", "vision"), scope_lock_key("user", "vision")
    assert a == scope_lock_key("project", "vision") and a != b
    assert all(-2 ** 63 <= k < 2 ** 63 for k in (a, b))


def test_liveness_follows_the_lease_not_the_controller():
    now = T0
    base = dict(now=now, created_at=now - timedelta(seconds=10), expires_at=now + timedelta(hours=1))
    assert is_live(**base, lease_status=None)                                    # check done, lease row not yet
    assert not is_live(**{**base, "created_at": now - timedelta(seconds=PENDING_S + 1)}, lease_status=None)
    assert is_live(**base, lease_status="leasing", lease_max_deadline=now + timedelta(minutes=5))
    assert not is_live(**base, lease_status="leasing", lease_max_deadline=now - timedelta(seconds=1))
    assert is_live(**base, lease_status="active", lease_deadline=now + timedelta(seconds=60))
    assert is_live(**base, lease_status="active", lease_deadline=now - timedelta(seconds=10))   # within slack
    assert not is_live(**base, lease_status="active", lease_deadline=now - timedelta(minutes=5))  # controller dead
    for status in ("released", "failed", "kept-and-gone"):
        assert not is_live(**base, lease_status=status)
    assert not is_live(**{**base, "expires_at": now}, lease_status="active", lease_deadline=now + timedelta(hours=2))


# -- the check and the reservation (SQLite, fake clock) ------------------------------------------
def test_run_budgets_share_a_project_budget_until_it_cannot_pay_a_minimum(db, clock):
    limits = BudgetLimits(run=Decimal(3), project_monthly=Decimal(10))
    for lease_id in ("l-1", "l-2", "l-3"):                    # each reserves its $3 run budget
        policy, _ = admit(db, clock, limits, lease_id)
        assert policy.reserved_micro == to_micro(3)
    policy, _ = admit(db, clock, limits, "l-4")               # $1 left still pays the $0.60 minimum
    assert policy.reserved_micro == to_micro(1)
    assert reserved(db, "l-4")[0]["minimum_micro"] == to_micro("0.60")
    with pytest.raises(BudgetRefused) as info:
        admit(db, clock, limits, "l-5")
    text = str(info.value)
    assert info.value.exit_code == ExitCode.BUDGET_REFUSED == 6 and "\n" not in text
    assert "project 'vision' (2025-06) has $0.00 left" in text
    assert "$10.00 limit, $0.00 spent, $10.00 reserved by other live runs" in text
    assert "at least $0.60" in text
    assert reserved(db, "l-5") == []                          # a refusal reserves nothing
    assert Reservations(db, clock).settle("l-2", spent_micro=to_micro(1)) == 1
    admit(db, clock, limits, "l-5")                           # settled: its $3 came back
    assert Reservations(db, clock).settle("l-2") == 0          # settling twice changes nothing


def test_without_a_run_budget_a_lease_claims_its_max_duration_up_to_what_is_left(db, clock):
    limits = BudgetLimits(project_monthly=Decimal(100))
    assert admit(db, clock, limits, "short", max_s=600)[0].reserved_micro == to_micro(6)   # 10 min at $36/h
    assert admit(db, clock, limits, "long", max_s=8 * 3600)[0].reserved_micro == to_micro(94)   # all that's left
    with pytest.raises(BudgetRefused, match=r"\$100.00 reserved by other live runs"):
        admit(db, clock, limits, "late")
    admit(db, clock, limits, "elsewhere", project="nlp")       # another project's budget is untouched


def test_user_budget_reserves_across_projects(db, clock):
    limits = BudgetLimits(run=Decimal(4), user_monthly=Decimal(6))
    admit(db, clock, limits, "u-1", project="vision")
    admit(db, clock, limits, "u-2", project="nlp")             # $2 left: reserves $2
    with pytest.raises(BudgetRefused, match="user 'ana'"):
        admit(db, clock, limits, "u-3", project="speech")
    admit(db, clock, limits, "b-1", user="bo")


def test_spend_is_not_counted_twice_and_the_accrual_honours_other_reservations(db, clock):
    ledger, res = Ledger(db, clock), Reservations(db, clock)
    limits = BudgetLimits(project_monthly=Decimal(10), grace_s=0)
    policy_a, price = admit(db, clock, limits, "l-a", max_s=300)   # estimate: 5 min at $36/h = $3
    lease_row(db, clock, "l-a")
    assert policy_a.reserved_micro == to_micro(3)
    meter_a = RunMeter(ledger, policy_a, limits=limits, clock=clock, reservations=res)
    meter_a.start(_Lease("l-a", "vision", "ana", "box", "aws", [_Machine("a-0", (0,))]), price, run_id="r-l-a")
    clock.advance(200)                                         # $2 spent of A's $3 reservation
    meter_a.tick()
    assert res.held_micro(project="vision") == to_micro(1)
    clock.advance(200)                                         # $4 spent: past its reservation (no run budget)
    assert meter_a.tick().action == "ok"
    assert res.held_micro(project="vision") == 0               # the ledger's $4 counts, not $4 + $3
    # B is admitted with what is left after A's $4 and claims all of it ($6)…
    policy_b, _ = admit(db, clock, limits, "l-b")
    lease_row(db, clock, "l-b")
    assert policy_b.reserved_micro == to_micro(6)
    assert (policy_b.scopes[0].spent_before_micro, policy_b.scopes[0].reserved_micro) == (to_micro(4), 0)
    # …so A's next tick sees $10 − B's $6 held − its own $4 = nothing left, and stops.
    verdict = meter_a.tick()
    assert verdict.action == "stop" and "project 'vision'" in verdict.message
    assert meter_a.remaining_micro() == 0
    res.settle("l-b", spent_micro=0)                           # B ended without spending: A has $6 again
    meter_a.tick()
    assert meter_a.remaining_micro() == to_micro(6)


def test_check_without_monthly_budgets_reserves_nothing(db, clock):
    policy, _ = admit(db, clock, BudgetLimits(run=Decimal(5)), "solo")
    assert policy.reserved_micro == 0 and reserved(db, "solo") == []


def test_a_dead_lease_stops_holding_money(db, clock):
    limits = BudgetLimits(run=Decimal(6), project_monthly=Decimal(10))
    admit(db, clock, limits, "crashed")
    lease_row(db, clock, "crashed", deadline_s=60)            # controller killed: deadline never pushed again
    admit(db, clock, limits, "released")
    lease_row(db, clock, "released", status="released")       # `fleet down` released it
    res = Reservations(db, clock)
    assert res.held_micro(project="vision") == to_micro(6)    # the released one holds nothing already
    with pytest.raises(BudgetRefused):                        # $4 left after the crashed one's $6
        admit(db, clock, BudgetLimits(run=Decimal(6), project_monthly=Decimal(10)), "x", max_s=3600 * 10,
              machines=8)                                     # 8 machines: $4.80 minimum > $4 left
    clock.advance(60 + 30 + 1)                                # past its deadline and the slack
    assert res.held_micro(project="vision") == 0
    admit(db, clock, limits, "next", machines=8)


def _run_row(db, run_id: str, controller: dict) -> None:
    import json
    db.execute("INSERT INTO runs (id, lease_id, project, owner, command, status, started_at, meta)"
               " VALUES (?,?,?,?,?,?,?,?)", (run_id, None, "vision", "ana", "true", "running",
                                             T0.isoformat(), json.dumps({"controller": controller})))


def test_a_leasing_lease_whose_controller_died_holds_money_only_to_its_deadline(db, clock):
    """A controller SIGKILLed while leasing left the lease `leasing`: its reservation held the
    budget for the whole max_duration, though the machines it made end at their first deadline."""
    import subprocess
    from fleet.lost_runs import _start_ticks, controller_identity
    limits = BudgetLimits(run=Decimal(6), project_monthly=Decimal(20))
    dead = subprocess.Popen(["sleep", "60"])
    try:
        ident = {**controller_identity(), "pid": dead.pid, "start": _start_ticks(dead.pid)}
    finally:
        dead.kill()
        dead.wait()
    _run_row(db, "r-killed", ident)
    _run_row(db, "r-alive", controller_identity())            # this process: provably alive
    for lease_id in ("killed", "alive"):
        admit(db, clock, limits, lease_id)
        lease_row(db, clock, lease_id, status="leasing", deadline_s=60)
    res = Reservations(db, clock)
    assert res.held_micro(project="vision") == to_micro(12)
    clock.advance(60 + 30 + 1)                                # past the first deadline and the slack
    # the dead one's machines ended there; a live controller may still be leasing (a queue's wait)
    assert res.held_micro(project="vision") == to_micro(6)
    assert [h.lease_id for h in res.live(project="vision")] == ["alive"]
