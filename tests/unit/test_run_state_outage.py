"""A run whose state database is unreachable for a while (a lock held elsewhere, a PostgreSQL
restart): found by the red team, a `fleet up` under a monthly budget died at its next tick with
"state database … terminating connection" (exit 3, machines destroyed). Now the run goes on, its
cost counted in memory and written, outage included, when the database is back; a budgeted run is
stopped only when the outage outlasts what other runs' budget checks can account for (one heartbeat
TTL, less the stop's grace)."""
from __future__ import annotations

import re
import time
from dataclasses import replace
from decimal import Decimal

import pytest

from fleet.config.model import BudgetsConfig
from fleet.errors import ExitCode, StateUnavailable
from fleet.providers.fake import FakeProvider, FakeSettings
from fleet.run.lease import NewLease
from fleet.run.pipeline import Pipeline
from fleet.run.types import ExecResult
from fleet.state.db import Database
from fleet.config.model import Config
from tests.unit.test_run_pipeline import FakeMachines, StepClock, ledger_for


@pytest.fixture
def config(tmp_path, fleet_home) -> Config:
    return Config(path=None, base_dir=tmp_path, project="p", name="p", command="ok", template="fake-4gpu",
                  provider="fake", gpus=8, max_duration_s=600, heartbeat_ttl_s=60, budgets=BudgetsConfig(grace_s=0))


class Outage:
    """The state database answers nothing while `down` (every statement, as a held lock or a
    restarting server does), from the moment the test says until it says otherwise."""

    def __init__(self, monkeypatch):
        self.down = False
        for name in ("execute", "executemany", "rows"):
            real = getattr(Database, name)
            monkeypatch.setattr(Database, name, self._guard(real))
        real_tx = Database.transaction

        def transaction(db):
            if self.down:
                raise StateUnavailable(f"state database {db.path}: database is locked")
            return real_tx(db)
        monkeypatch.setattr(Database, "transaction", transaction)

    def _guard(self, real):
        def call(db, *args, **kwargs):
            if self.down and not str(args[0]).startswith("PRAGMA"):
                raise StateUnavailable(f"state database {db.path}: database is locked")
            return real(db, *args, **kwargs)
        return call


class Ticking(FakeMachines):
    """`ticks N FROM TO`: N budget ticks, one second each, the database down from tick FROM to TO."""

    def __init__(self, clock, outage):
        super().__init__(clock)
        self.outage = outage

    def execute(self, ctx, lease, command, *, setup=False, on_tick=None) -> ExecResult:
        word, *args = command.split()
        if word != "ticks":
            return super().execute(ctx, lease, command, setup=setup, on_tick=on_tick)
        n, down_from, down_to = (int(a) for a in args)
        try:
            for i in range(n):
                if ctx.cancel.is_set():
                    return ExecResult(ExitCode.CANCELLED, "0")
                self.outage.down = down_from <= i < down_to
                self.clock.advance(1.0)
                on_tick()
                time.sleep(0.001)
        finally:
            self.outage.down = False
        return ExecResult(0)


class Said:
    def __init__(self):
        self.warnings: list[str] = []

    def phase(self, name, detail="") -> None:
        pass

    def log(self, label, stream, line) -> None:
        pass

    def warn(self, message) -> None:
        self.warnings.append(message)


def _run(config, monkeypatch, command, **changes):
    outage, clock, said = Outage(monkeypatch), StepClock(), Said()
    provider = FakeProvider(FakeSettings(price_per_hour=Decimal(36)))   # $0.01/s per machine
    summary = Pipeline(replace(config, command=command, **changes), NewLease(provider), events=said,
                       machines=Ticking(clock, outage), clock=clock).run()
    return summary, said.warnings


@pytest.mark.parametrize("budgets", [BudgetsConfig(grace_s=0, project_monthly=Decimal(100)), BudgetsConfig(grace_s=0)],
                         ids=["monthly-budget", "no-budget"])
def test_a_state_database_outage_is_waited_out_and_its_time_billed(config, monkeypatch, budgets):
    summary, warnings = _run(config, monkeypatch, "ticks 60 10 40", budgets=budgets, gpus=4)   # one machine
    assert (summary.status, summary.exit_code) == ("succeeded", 0), (summary.message, warnings)
    about = [w for w in warnings if "state database" in w]
    assert len(about) == 2, warnings   # once when it went, once when it came back: not every tick
    assert "database is locked: the run goes on" in about[0], about
    assert re.search(r"reachable again after \d+s", about[1]) and "the ledger has the run's cost" in about[1], about
    rows = ledger_for(summary.lease_id)
    assert Decimal(summary.cost_usd) == sum(r.cost_micro for r in rows) / Decimal(1_000_000)
    # Every second of the 60 billed, the 30 of the outage too (rows cover it without a gap).
    assert Decimal(summary.cost_usd) >= Decimal("0.60"), summary.cost_usd
    mids = sorted((r.start_at, r.end_at) for r in rows)
    assert all(a[1] == b[0] for a, b in zip(mids, mids[1:])), mids


def test_a_budgeted_run_stops_when_the_outage_outlasts_the_heartbeat_ttl(config, monkeypatch):
    summary, warnings = _run(config, monkeypatch, "ticks 200 5 200", heartbeat_ttl_s=20,
                             budgets=BudgetsConfig(grace_s=0, project_monthly=Decimal(100)), gpus=4)
    assert (summary.status, summary.exit_code) == ("budget-stopped", ExitCode.BUDGET_STOPPED), summary.message
    # Two thirds of the TTL (the last recorded deadline may be that close: beats come every third)
    # less the stop's grace and margin (0 + 3 s): 10.3 s, so the stop comes at the 11th second.
    assert summary.message.startswith("state database unreachable for 11s (state database "), summary.message
    assert "the budget cannot be enforced without its ledger" in summary.message
    assert any("stopped if it stays unreachable for 10s" in w for w in warnings), warnings
    rows = ledger_for(summary.lease_id)   # written once the database answered again (at release)
    assert Decimal(summary.cost_usd) == sum(r.cost_micro for r in rows) / Decimal(1_000_000) >= Decimal("0.16")


def test_a_budget_verdict_still_stops_the_run_during_an_outage(config, monkeypatch):
    summary, _ = _run(config, monkeypatch, "ticks 500 5 500", budget=Decimal("1"), gpus=4, heartbeat_ttl_s=600)
    assert (summary.status, summary.exit_code) == ("budget-stopped", ExitCode.BUDGET_STOPPED), summary.message
    assert "budget for run reached" in summary.budget_stop
