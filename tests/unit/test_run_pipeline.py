"""The whole run pipeline in-process, against the fake provider and fake machines (no sshd): every
stage runs for real except the ones that touch machines, and each outcome is read off the
RunSummary, the run record and the ledger as a user would see them.

A budget crossing needs money to be spent: the pipeline's clock is a StepClock that the fake
command moves one second per budget tick, so a $1 budget at $36/h is crossed after about a hundred
ticks, whatever the machine's load.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from fleet.config.model import BudgetsConfig, Config
from fleet.errors import ExitCode, UsageError
from fleet.money.ledger import Ledger
from fleet.models import utcnow
from fleet.providers.fake import FakeProvider, FakeSettings
from fleet.records.chain import get_record
from fleet.run.lease import KeptLease, NewLease
from fleet.run.observers import RunObserver
from fleet.run.pipeline import STAGES, Pipeline, run_on_lease
from fleet.run.summary import RunSummary
from fleet.run.types import Collected, ExecResult, RunOptions, StagedInputs
from fleet.state import open_state

LOOP_LIMIT_S = 30.0          # a fake command that never sees its stop gives up (and fails the test) after this


def lease_of(lease_id: str):
    state = open_state()
    try:
        return state.get_lease(lease_id)
    finally:
        state.close()


def released(provider: FakeProvider, lease_id: str) -> bool:
    states = provider.describe(lease_of(lease_id))
    return bool(states) and all(s.state == "gone" and s.detail == "released" for s in states)


class NoBeats:
    """Beats that hold every machine to the lease's max deadline and say so, as a heartbeat reports
    what the machines hold (the meter bills no machine past it)."""

    def __init__(self, lease=None, on_deadline=None):
        self.lease, self.on_deadline = lease, on_deadline

    def beat(self, ttl_s=None) -> None:
        if self.on_deadline is not None:
            self.on_deadline(self.lease.max_deadline)

    def start(self): return self
    def stop(self) -> None: pass
    def lost(self) -> set: return set()


class FakeMachines:
    """Commands are scripts for the fake: `ok`, `fail RANK CODE`, `wait` (until stopped), `interrupt`
    (sends this process SIGINT, as Ctrl-C would, then waits until stopped)."""

    def __init__(self, clock: "StepClock | None" = None):
        self.ran: list[tuple[str, bool]] = []
        self.clock = clock

    def heartbeat(self, lease, ttl_s, *, caps, on_deadline, warn, publish=None):
        return NoBeats(lease, on_deadline)

    def wait_ready(self, ctx, machines) -> None:
        pass

    def stage(self, inputs, lease, events) -> StagedInputs:
        return StagedInputs(machines=len(lease.machines), bytes_sent=0, pinned=inputs.pins.pinned)

    def execute(self, ctx, lease, command, *, setup=False, on_tick=None) -> ExecResult:
        self.ran.append((command, setup))
        word, *args = command.split()
        if word == "ok":
            return ExecResult(0)
        if word == "fail":
            return ExecResult(int(args[1]), args[0])
        if word == "interrupt":
            os.kill(os.getpid(), signal.SIGINT)
        end = time.monotonic() + LOOP_LIMIT_S
        while not ctx.cancel.is_set() and time.monotonic() < end:
            if self.clock is not None:
                self.clock.advance(1.0)
            if on_tick is not None:
                on_tick()
            time.sleep(0.001)
        return ExecResult(ExitCode.CANCELLED if ctx.cancel.is_set() else ExitCode.INFRASTRUCTURE, "0")

    def collect(self, ctx, lease) -> Collected:
        return Collected(files=0)

    def keep(self, state, lease, keep_s, events) -> str | None:
        until = (self.clock or utcnow)() + timedelta(seconds=keep_s)
        state.set_lease_deadline(lease.id, until, keep_until=until)   # as the real keep records it
        return until.isoformat()


class StepClock:
    """Time that moves only when the fake command says so (winding down after a stop is instant)."""

    def __init__(self):
        self.now = datetime.now(timezone.utc)
        self.lock = threading.Lock()

    def __call__(self) -> datetime:
        with self.lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.now += timedelta(seconds=seconds)


class Finished(RunObserver):
    def __init__(self):
        self.summaries: list[RunSummary] = []

    def on_finish(self, ctx, summary) -> None:
        self.summaries.append(summary)


@pytest.fixture
def config(tmp_path, fleet_home) -> Config:
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "train.py").write_text("print('hi')\n")
    return Config(path=None, base_dir=exp, project="p", name="p", command="ok", template="fake-4gpu", provider="fake",
                  gpus=8, max_duration_s=600, heartbeat_ttl_s=60, budgets=BudgetsConfig(grace_s=0))


def run(config: Config, *, provider=None, options=None, clock=None, **changes) -> tuple[RunSummary, FakeProvider,
                                                                                       Finished]:
    from dataclasses import replace
    provider = provider or FakeProvider(FakeSettings(price_per_hour=Decimal(36)))   # $0.01/s per machine
    finished = Finished()
    kwargs = {"clock": clock} if clock else {}
    machines = FakeMachines(clock)
    summary = Pipeline(replace(config, **changes), NewLease(provider), options=options, observers=[finished],
                       machines=machines, **kwargs).run()
    return summary, provider, finished


def ledger_for(lease_id: str):
    state = open_state()
    try:
        return Ledger(state.db).read(lease_id=lease_id).entries
    finally:
        state.close()


def test_stage_sequence_is_named_in_order():
    assert STAGES == ("plan", "pin", "budget", "lease", "ready", "checkpoint", "stage", "setup", "environment",
                      "execute", "collect", "release", "record")


def test_success_leases_the_offered_mix_meters_it_records_it_and_releases(config):
    summary, provider, finished = run(config)
    assert isinstance(summary, RunSummary) and finished.summaries == [summary]
    assert (summary.status, summary.exit_code, summary.released) == ("succeeded", 0, True)
    assert (summary.provider, summary.template, summary.gpus, summary.machines) == ("fake", "fake-4gpu", 8, 2)
    assert released(provider, summary.lease_id)
    assert summary.cost_usd is not None and summary.would_cost_usd is None
    record = get_record(summary.run_id)
    assert record.hash == summary.record_hash and record.cost_usd == summary.cost_usd
    assert record.code_snapshot and record.status == "succeeded" and record.machines == 2
    rows = ledger_for(summary.lease_id)
    assert sorted(r.kind for r in rows if r.kind != "tick") == ["close", "close", "open", "open"]
    assert Decimal(summary.cost_usd) == sum(r.cost_micro for r in rows) / Decimal(1_000_000)
    assert RunSummary.from_json(json.loads((Path(summary.run_dir) / "summary.json").read_text())) == summary


def test_the_experiments_exit_code_and_failing_rank_pass_through(config):
    summary, provider, _ = run(config, command="fail 1 3")
    assert (summary.status, summary.exit_code, summary.failing_rank, summary.released) == ("failed", 3, "1", True)
    assert get_record(summary.run_id).exit_status == 3


def test_setup_failure_skips_the_command_and_still_releases_and_records(config):
    summary, provider, _ = run(config, setup="fail setup:0 7")
    assert (summary.status, summary.exit_code, summary.failing_rank) == ("setup-failed", 7, "setup:0")
    assert released(provider, summary.lease_id)
    assert get_record(summary.run_id).status == "setup-failed"


def test_ctrl_c_cancels_the_run_releases_and_records_it(config):
    assert threading.current_thread() is threading.main_thread()   # where the signal handler lives
    summary, provider, _ = run(config, command="interrupt")
    assert (summary.status, summary.exit_code) == ("cancelled", ExitCode.CANCELLED)
    assert "SIGINT" in summary.message and summary.released and released(provider, summary.lease_id)
    assert get_record(summary.run_id).status == "cancelled"


def test_a_budget_crossing_stops_the_run_within_budget(config):
    summary, provider, _ = run(config, command="wait", budget=Decimal(1), gpus=4, clock=StepClock())
    assert (summary.status, summary.exit_code) == ("budget-stopped", ExitCode.BUDGET_STOPPED)
    assert "budget for run reached" in summary.budget_stop and summary.budget_usd == "1"
    assert summary.released and released(provider, summary.lease_id)
    # one machine at $0.01/s, stopped when only the grace + margin reserve (0 + 3 s) was left
    assert summary.machines == 1 and Decimal(summary.cost_usd) == Decimal("0.97")
    assert get_record(summary.run_id).cost_usd == summary.cost_usd


def test_keep_leaves_the_lease_up_and_run_on_lease_is_budgeted_and_recorded(config):
    provider = FakeProvider(FakeSettings(price_per_hour=Decimal(36)))
    first, _, _ = run(config, provider=provider, options=RunOptions(keep_s=300))
    assert first.kept_until and not first.released and not released(provider, first.lease_id)
    assert get_record(first.run_id).cost_usd == first.cost_usd is not None
    again = run_on_lease(first.lease_id, "ok", config=config, provider=provider, machines=FakeMachines())
    assert (again.status, again.lease_id, again.released) == ("succeeded", first.lease_id, False)
    assert again.cost_usd is not None and get_record(again.run_id).cost_usd == again.cost_usd
    # the runs' own time, and the kept lease's idle time between and after them (no run)
    rows = ledger_for(first.lease_id)
    assert {r.run_id for r in rows} == {first.run_id, again.run_id, None}
    assert all(r.segment_id.endswith("#kept") for r in rows if r.run_id is None)
    assert not released(provider, first.lease_id)
    assert [s.state for s in provider.describe(lease_of(first.lease_id))] == ["running", "running"]


def test_a_keep_that_raises_still_releases_records_and_settles_the_run(config, monkeypatch):
    """Red-team finding: a locked database in the budget check of `--keep` left the release and the
    record undone: the lease up, the run `running`, its reservation held to the heartbeat deadline."""
    from fleet.errors import EnvironmentProblem
    from fleet.run import keep

    def locked(ctx, keep_s):
        raise EnvironmentProblem("state database state.db is locked")
    monkeypatch.setattr(keep, "keep_within_budget", locked)
    summary, provider, _ = run(config, options=RunOptions(keep_s=300))
    assert (summary.status, summary.released, summary.kept_until) == ("succeeded", True, None)
    assert released(provider, summary.lease_id) and get_record(summary.run_id).status == "succeeded"


@pytest.mark.parametrize("bad", [float("nan"), -5, "ten minutes", True, float("inf")])
def test_keep_s_from_the_python_api_is_checked_as_keep_is(bad):
    with pytest.raises(UsageError, match="^keep_s must be"):
        RunOptions(keep_s=bad)
    assert RunOptions(keep_s="10m").keep_s == 600 and RunOptions(keep_s=0).keep_s is None   # 0: no keep


def test_run_on_a_kept_lease_stops_at_its_budget(config):
    from dataclasses import replace
    provider = FakeProvider(FakeSettings(price_per_hour=Decimal(36)))
    first, _, _ = run(config, provider=provider, options=RunOptions(keep_s=300), gpus=4)
    kept = KeptLease(provider, lease_of(first.lease_id))
    clock = StepClock()
    summary = Pipeline(replace(config, command="wait", budget=Decimal(1)), kept,
                       machines=FakeMachines(clock), clock=clock).run()
    assert (summary.status, summary.exit_code, summary.released) == ("budget-stopped", 11, False)
    assert get_record(summary.run_id).status == "budget-stopped"


def test_an_observer_with_a_misspelt_hook_is_refused_when_registered(config):
    class Typo(RunObserver):
        def on_finsh(self, ctx, summary) -> None:
            pass

    class WrongArgs(RunObserver):
        def on_finish(self, summary) -> None:
            pass

    with pytest.raises(TypeError, match=r"on_finsh is not a run hook \(did you mean on_finish\?\)"):
        Pipeline(config, NewLease(FakeProvider()), observers=[Typo()], machines=FakeMachines())
    with pytest.raises(TypeError, match="does not match the hook on_finish"):
        Pipeline(config, NewLease(FakeProvider()), observers=[WrongArgs()], machines=FakeMachines())
    with pytest.raises(TypeError, match="not a RunObserver"):
        Pipeline(config, NewLease(FakeProvider()), observers=[object()], machines=FakeMachines())


class TakingProvider(FakeProvider):
    """A fake provider that, like Slurm preempting a job, says it took the machines away."""

    def loss_reason(self, lease) -> str | None:
        return "Slurm ended job 7 under the run: PREEMPTED"


def test_a_command_killed_by_the_signal_of_a_provider_taking_its_machines_is_a_loss_not_a_failure(config):
    """Slurm's preemption SIGTERMs every process of the job, the command's too: its exit status (143)
    can come home before the machine's sshd goes. That is the machines' loss, not a failed experiment."""
    from fleet.providers.capabilities import ExplainsLoss
    taking = type("Taking", (TakingProvider, ExplainsLoss), {})(FakeSettings(price_per_hour=Decimal(36)))
    summary, _, _ = run(config, provider=taking, command="fail 0 143")
    assert (summary.status, summary.exit_code, summary.failing_rank) == ("error", ExitCode.INFRASTRUCTURE, "0")
    assert "PREEMPTED" in summary.message, summary.message
    # The experiment's own failure stays its own: another code, or a provider that took nothing.
    assert run(config, provider=taking, command="fail 0 3")[0].status == "failed"
    assert run(config, command="fail 0 143")[0].status == "failed"


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), -100, True, "soon"])
def test_extend_from_the_python_api_checks_seconds_before_any_machine_moves(bad):
    """inf moved every machine to max_duration, then failed converting it: the caller saw an error."""
    from fleet.leases import extend
    with pytest.raises(UsageError, match="^seconds must be"):
        extend("l-00000000", bad, state=object())     # never read: refused before the state is touched


@pytest.mark.parametrize("step_h", [-1, 1], ids=["back", "forward"])
def test_the_controllers_wall_clock_stepping_bills_the_machines_time_as_it_passed(config, monkeypatch, step_h):
    """NTP or a user's `date` steps the controller's clock an hour as the command starts. Stepped back,
    the meter, reading the wall clock, billed nothing until the clock caught up, so a budget stopped
    nothing and the heartbeat, capped by what the budget had left, kept the machines up unpaid all that
    hour; stepped forward, it billed the hour nobody used at once (and a budget stopped the run for it)."""
    from fleet.money import budget as money
    wall = money.datetime

    class Stepped(wall):
        @classmethod
        def now(cls, tz=None):
            return wall.now(tz) + timedelta(hours=step_h)

    class Stepping(FakeMachines):
        def execute(self, ctx, lease, command, *, setup=False, on_tick=None):
            monkeypatch.setattr(money, "datetime", Stepped)
            end = time.monotonic() + 3
            while time.monotonic() < end:   # three seconds of the command, ticking as the real loop does
                on_tick()
                time.sleep(0.05)
            return ExecResult(0)

    from dataclasses import replace
    provider = FakeProvider(FakeSettings(price_per_hour=Decimal(3600)))   # $1/s
    summary = Pipeline(replace(config, gpus=4), NewLease(provider), machines=Stepping()).run()
    assert summary.status == "succeeded"
    assert Decimal(3) <= Decimal(summary.cost_usd) < Decimal(10), summary.cost_usd
    rows = ledger_for(summary.lease_id)
    assert all(r.cost_micro >= 0 for r in rows)
    assert sum(r.cost_micro for r in rows) == int(Decimal(summary.cost_usd) * 10 ** 6)
