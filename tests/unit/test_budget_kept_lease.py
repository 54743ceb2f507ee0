"""A run on a kept lease (`fleet run LEASE`) counts what earlier runs on that lease spent in its
monthly budgets, and its reservation holds what it may still spend: earlier runs' spend on the
lease neither hides from its check nor shrinks its claim as other users see it.

The reviewer's case: a $50 project budget, run 1 spends $36 on lease L and L is kept; a second
run on L used to see $0 spent and could reserve (and spend) the whole $50 again."""
from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest

from fleet.config.model import BudgetsConfig, Config
from fleet.errors import BudgetRefused
from fleet.money.budget import Price, month_start, to_micro, utc_clock
from fleet.money.kept import close_kept
from fleet.money.ledger import Ledger, iso
from fleet.money.metering import RunMeter
from fleet.money.reservations import Reservations
from fleet.models import Template
from fleet.providers.fake import FakeProvider, FakeSettings
from fleet.run.budget import BudgetGate
from fleet.run.lease import KeptLease, NewLease
from fleet.run.pipeline import Pipeline
from fleet.run.types import ExecResult, Offer, RunOptions
from fleet.state import open_state
from tests.fixtures.ledger import FakeClock, _Lease, _Machine
from tests.unit.test_run_pipeline import FakeMachines, StepClock, lease_of, ledger_for, released

# In the current month, so a gate that reads the real clock for its month still sees these rows.
T0 = month_start(utc_clock()) + timedelta(days=1)
BOX = Template("box", "aws", 1, price_per_hour=Decimal(36), price_source="price table")   # $0.01 a second
MONTHLY = BudgetsConfig(project_monthly=Decimal(50), grace_s=0)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path, fleet_home):
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else \
        f"sqlite:///{tmp_path / 'state.db'}"
    state = open_state(url)
    yield state.db
    state.close()


@pytest.fixture
def clock():
    return FakeClock(T0)


def offer(user: str = "ana", max_s: int = 3600) -> Offer:
    return Offer(provider="aws", template=BOX, machine_count=1, gpus=1, max_duration_s=max_s, heartbeat_ttl_s=60,
                 project="vision", user=user)


def gate(db, clock) -> BudgetGate:
    config = Config(path=None, base_dir=Path("."), project="vision", name="t", command="true", budgets=MONTHLY)
    return BudgetGate(config, SimpleNamespace(db=db), clock)


def record_lease(db, clock, lease_id: str) -> _Lease:
    """The lease row the pipeline writes after the gate (begin_lease), then active."""
    now = clock()
    db.execute("INSERT INTO leases (id, provider, template, project, owner, status, created_at, deadline,"
               " max_deadline, heartbeat_ttl_s) VALUES (?,?,?,?,?,?,?,?,?,?)",
               (lease_id, "aws", "box", "vision", "ana", "active", iso(now), iso(now + timedelta(hours=4)),
                iso(now + timedelta(hours=8)), 60))
    return _Lease(lease_id, "vision", "ana", "box", "aws", [_Machine(f"{lease_id}-m0", (0,))])


def metered(db, clock, grant, lease, run_id: str, *, kept: bool = False) -> RunMeter:
    """A run's meter as RunBudget drives it; on a kept lease its idle time ends where the run starts."""
    ledger = Ledger(db, clock)
    meter = RunMeter(ledger, grant.policy, limits=grant.limits, clock=clock, reservations=Reservations(db, clock))
    if kept:
        close_kept(ledger, lease, clock())
    meter.start(lease, grant.price, run_id=run_id)
    return meter


def project_scope(policy):
    [scope] = [s for s in policy.scopes if s.name.startswith("project 'vision'")]
    return scope


def first_run_kept(db, clock) -> _Lease:
    """Run 1 on a new lease spends $36 (one hour), the lease is kept, and sits idle for a minute ($0.60)."""
    grant = gate(db, clock).grant(offer(), run_id="r-1", lease_id="l-1")
    lease = record_lease(db, clock, "l-1")
    meter = metered(db, clock, grant, lease, "r-1")
    clock.advance(3600)
    meter.tick()
    assert project_scope(meter.policy).spent_before_micro == 0   # a new lease's rows are the run's own
    Reservations(db, clock).settle("l-1", meter.finish(kept=lease))
    clock.advance(60)
    return lease


def test_a_run_on_a_kept_lease_counts_the_earlier_runs_spend_and_reserves_only_what_is_left(db, clock):
    lease = first_run_kept(db, clock)
    grant = gate(db, clock).grant(offer(), run_id="r-2", lease_id="l-1", kept=True)
    scope = project_scope(grant.policy)
    assert (scope.spent_before_micro, scope.reserved_micro) == (to_micro("36.60"), 0)
    assert grant.reserved_micro == to_micro("13.40")               # $50 − $36 run 1 − $0.60 kept
    meter = metered(db, clock, grant, lease, "r-2", kept=True)
    clock.advance(600)                                             # run 2 spends $6
    assert meter.tick().action == "warn"                           # $42.60 of $50: past 80 %
    # the re-check while it runs counts run 1 and the kept minute too, never run 2's own rows
    assert project_scope(meter.policy).spent_before_micro == to_micro("36.60")
    assert meter.remaining_micro() == to_micro("7.40")
    # others see run 2's reservation net of run 2's spend only, not of run 1's $36
    assert Reservations(db, clock).held_micro(project="vision") == to_micro("7.40")
    with pytest.raises(BudgetRefused, match=r"\$42.60 spent, \$7.40 reserved by other live runs"):
        gate(db, clock).grant(offer(user="bo", max_s=600), run_id="r-3", lease_id="l-3")


def test_a_second_concurrent_run_on_the_kept_lease_sees_the_first_ones_reservation(db, clock):
    lease = first_run_kept(db, clock)
    grant = gate(db, clock).grant(offer(), run_id="r-2", lease_id="l-1", kept=True)
    metered(db, clock, grant, lease, "r-2", kept=True)
    with pytest.raises(BudgetRefused, match=r"\$36.60 spent, \$13.40 reserved by other live runs"):
        gate(db, clock).grant(offer(max_s=600), run_id="r-3", lease_id="l-1", kept=True)


def test_a_run_ending_on_a_kept_lease_settles_only_its_own_reservation(db, clock, tmp_path):
    """Runs 2 and 3 share kept lease L; run 3 ending must leave run 2's $6 claim in place, or a third
    user could reserve money run 2 is about to spend."""
    from fleet.run.budget import RunBudget
    lease = first_run_kept(db, clock)
    gate(db, clock).grant(offer(max_s=600), run_id="r-2", lease_id="l-1", kept=True)
    close_kept(Ledger(db, clock), lease, clock())                  # run 2 starts on it: the idle time ends
    grant_3 = gate(db, clock).grant(offer(max_s=600), run_id="r-3", lease_id="l-1", kept=True)
    assert Reservations(db, clock).held_micro(project="vision") == to_micro(12)
    run_3 = RunBudget(grant_3, SimpleNamespace(db=db), lease_id="l-1", run_dir=tmp_path, clock=clock)
    assert run_3.finish(SimpleNamespace(events=None)) is None      # ended before its meter started
    assert Reservations(db, clock).held_micro(project="vision") == to_micro(6)   # run 2's, still held
    other = gate(db, clock).grant(offer(user="bo", max_s=3600), run_id="r-4", lease_id="l-4")
    assert other.reserved_micro == to_micro("7.40")                # $50 − $36.60 − run 2's $6


def test_earlier_runs_rows_on_a_kept_lease_are_spend_whenever_they_started(db, clock):
    """Rows of another run on the lease count even when they start after this run's start (a run
    still going on it); only this run's rows, and run-less ones from its start, are its own."""
    lease = record_lease(db, clock, "l-1")
    ledger = Ledger(db, clock)
    since = clock()
    other = [ledger.open_segment(lease=lease, machine=lease.machines[0], price=Price(to_micro(36), "price table"),
                                 run_id="r-other", at=since)]
    clock.advance(100)
    ledger.append(other)                                           # $1 by another run, after `since`
    assert ledger.spent_micro(project="vision", exclude_run="r-2", exclude_lease="l-1",
                              lease_kept_since=since) == to_micro(1)
    assert ledger.spent_micro(project="vision", exclude_run="r-2", exclude_lease="l-1") == 0   # a new lease


class Spending(FakeMachines):
    """`spend N`: the command runs N clock seconds (one budget tick each) and succeeds."""

    def execute(self, ctx, lease, command, *, setup=False, on_tick=None) -> ExecResult:
        word, *args = command.split()
        if word != "spend":
            return super().execute(ctx, lease, command, setup=setup, on_tick=on_tick)
        for _ in range(int(args[0])):
            self.clock.advance(1.0)
            if on_tick is not None:
                on_tick()
            time.sleep(0.001)
        return ExecResult(0)


def _dead_run_on(lease_id: str, clock) -> str:
    """A run on the lease whose controller was killed: its row, and its machine's open segment."""
    import subprocess
    from fleet.lost_runs import _start_ticks, controller_identity
    gone = subprocess.Popen(["sleep", "60"])
    ident = {**controller_identity(), "pid": gone.pid, "start": _start_ticks(gone.pid)}
    gone.kill()
    gone.wait()
    state = open_state()
    lease = lease_of(lease_id)
    state.create_run("r-dead", lease_id=lease_id, project="p", user=lease.user, command="x", log_path="",
                     output_dir="")
    state.db.execute("UPDATE runs SET meta = ? WHERE id = 'r-dead'", (json.dumps({"controller": ident}),))
    Ledger(state.db, clock).open_segment(lease=lease, machine=lease.machines[0], run_id="r-dead",
                                         price=Price(to_micro(36), "price table"))
    state.close()
    clock.advance(1)   # segment ids are machine@start: the next run's must not start at the same instant
    return "r-dead"


def test_the_pipeline_stops_a_run_on_a_kept_lease_at_the_monthly_budget_and_releases_the_lease(tmp_path, fleet_home):
    exp = tmp_path / "exp"
    exp.mkdir()
    config = Config(path=None, base_dir=exp, project="p", name="p", command="spend 100", template="fake-4gpu",
                    provider="fake", gpus=4, max_duration_s=600, heartbeat_ttl_s=60,
                    budgets=BudgetsConfig(project_monthly=Decimal(2), grace_s=0))
    provider = FakeProvider(FakeSettings(price_per_hour=Decimal(36)))   # one machine at $0.01/s
    clock = StepClock()
    first = Pipeline(config, NewLease(provider), options=RunOptions(keep_s=300), machines=Spending(clock),
                     clock=clock).run()
    assert (first.status, first.released, Decimal(first.cost_usd)) == ("succeeded", False, Decimal("1.00"))
    dead = _dead_run_on(first.lease_id, clock)      # killed earlier; its segment still open
    again = Pipeline(replace(config, command="wait"), KeptLease(provider, lease_of(first.lease_id)),
                     machines=Spending(clock), clock=clock).run()
    assert again.status == "budget-stopped" and "project 'p'" in again.budget_stop
    # what run 1 left ($1), less the stop margin; before the fix it ran on to about $1.97
    assert Decimal(again.cost_usd) <= Decimal("1.00")
    # the kept machines' idle time would bill on against the spent budget: they end with the run
    assert (again.released, again.kept_until) == (True, None)
    assert released(provider, first.lease_id) and lease_of(first.lease_id).status == "released"
    # what `fleet down` does for a dead run on it: its segment closed at the release, it ended lost
    state = open_state()
    assert state.get_run(dead)["status"] == "lost"
    assert not Ledger(state.db).open_segments(first.lease_id)
    state.close()
    clock.advance(3600)
    assert sum(r.cost_micro for r in ledger_for(first.lease_id)) <= to_micro(2)


def test_a_reservation_without_a_run_is_netted_only_by_its_leases_rows_from_when_it_was_made(db, clock):
    lease = record_lease(db, clock, "l-1")
    ledger, res = Ledger(db, clock), Reservations(db, clock)
    before = [ledger.open_segment(lease=lease, machine=lease.machines[0], price=Price(to_micro(36), "price table"),
                                  run_id="r-1")]
    clock.advance(100)
    ledger.close(before)                                           # $1 before the reservation
    res.reserve(lease_id="l-1", run_id=None, project="vision", owner="ana", amount_micro=to_micro(5),
                minimum_micro=to_micro("0.60"), lifetime_s=3600)
    after = [ledger.open_segment(lease=lease, machine=lease.machines[0], price=Price(to_micro(36), "price table"))]
    clock.advance(200)
    ledger.append(after)                                           # $2 after it
    assert res.held_micro(project="vision") == to_micro(3)


def test_two_live_runs_on_one_kept_lease_put_each_machine_second_on_the_ledger_once(db, clock, tmp_path):
    """Run 2 starts on the lease while run 1 still bills its machine: `fleet report` must show that
    machine's time once (run 1's, then the lease's kept time once run 1 ends), while run 2's own
    figure (its budget, its record) still counts the machine time it used."""
    import threading
    from dataclasses import dataclass

    from fleet.run.budget import RunBudget

    @dataclass
    class KeptLeaseRow(_Lease):
        max_deadline: object = None
        deadline: object = None

    @dataclass
    class RankedMachine(_Machine):
        node_rank: int = 0

    grant_1 = gate(db, clock).grant(offer(), run_id="r-1", lease_id="l-1")
    row = record_lease(db, clock, "l-1")
    lease = KeptLeaseRow(row.id, row.project, row.user, row.template, row.provider,
                         [RankedMachine(m.id, m.gpu_slots) for m in row.machines], max_deadline=clock() + timedelta(hours=8),
                         deadline=clock() + timedelta(hours=4))
    run_1 = metered(db, clock, grant_1, lease, "r-1")
    clock.advance(60)
    run_1.tick()                                                   # $0.60, and a live run's recent row
    grant_2 = gate(db, clock).grant(offer(max_s=600), run_id="r-2", lease_id="l-1", kept=True)
    run_2 = RunBudget(grant_2, SimpleNamespace(db=db), lease_id="l-1", run_dir=tmp_path, clock=clock)
    ctx = SimpleNamespace(run_id="r-2", events=SimpleNamespace(warn=lambda message: None), offer=offer(),
                          cancel=threading.Event(), request_stop=lambda *args: None)
    run_2.start(ctx, lease, since=clock(), kept=True)
    clock.advance(600)                                             # both run for ten minutes: $6 of machine time
    run_1.tick()
    run_2.tick(ctx)
    ledger = Ledger(db, clock)
    assert ledger.spent_micro(project="vision") == to_micro("6.60")   # not $12.60
    assert run_2.spent_micro() == to_micro(6)                      # run 2's own figure counts what it used
    run_1.finish(kept=lease)                                       # run 1 ends: the machine passes to kept time
    clock.advance(100)
    cost = run_2.finish(ctx, kept=lease)
    assert cost.total_micro == to_micro(7)
    open_now = ledger.open_segments("l-1")
    assert [s.segment_id.endswith("#kept") for s in open_now] == [True]
    ledger.close(open_now, clock())
    assert ledger.spent_micro(project="vision") == to_micro("7.60")   # 760 machine-seconds, each once


def test_a_kept_leases_time_to_its_deadline_is_held_against_the_monthly_budget(db, clock):
    """Red-team finding: `--keep` after `--keep` each saw only the other kept leases' time so far,
    and four kept leases spent $367 of a $100 monthly budget. A kept lease's machines run to its
    deadline whatever happens, so its rest is held like a live run's reservation."""
    first_run_kept(db, clock)          # $36.60 so far; kept to 4 h after its start: 2 h 59 min ($107.40) to go
    with pytest.raises(BudgetRefused, match=r"\$36.60 spent, \$0.00 reserved by other live runs, "
                                            r"\$107.40 held by kept leases to their deadlines"):
        gate(db, clock).grant(offer(user="bo", max_s=600), run_id="r-9", lease_id="l-9")


def test_fleet_budget_shows_what_kept_leases_hold(db, clock):
    """`fleet budget`'s line and JSON add up: the kept leases' hold is named beside spend and reservations."""
    from fleet.money.standing import budget_standing
    first_run_kept(db, clock)
    config = Config(path=None, base_dir=Path("."), project="vision", name="t", command="true", budgets=MONTHLY)
    standing = budget_standing(config, Ledger(db, clock), user="ana", now=clock())
    scope = standing.to_json()["budgets"][0]
    assert (scope["spent_usd"], scope["kept_usd"]) == ("36.600000", "107.400000")
    assert "$107.40 held by kept leases to their deadlines" in standing.lines()[-1]
