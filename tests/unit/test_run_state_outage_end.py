"""A state database outage at a run's end (red-team finding): a budgeted run stopped by an outage
ends while the database is most likely still down. It used to leave the run `running`, its lease
`active`, no summary.json, the outage's cost only in memory, `release … failed; machines end at their
deadline` (false: they were gone), and the telemetry thread fetching for ever. Now each write of the
end waits the outage out (fleet/run/state_wait.py), a release the state could not record is still a
release, and when the database never answers summary.json has the outcome and up() says so in one
line. In-process, against the fake provider and fake machines."""
from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from fleet.config.model import BudgetsConfig
from fleet.errors import ExitCode, StateUnavailable
from fleet.money.ledger import KEPT_SUFFIX
from fleet.providers.fake import FakeProvider, FakeSettings
from fleet.run.lease import NewLease
from fleet.run.pipeline import Pipeline
from fleet.run.types import ExecResult
from fleet.state import open_state
from fleet.state.store import StateStore
from tests.unit.test_run_pipeline import FakeMachines, StepClock, ledger_for, released
from tests.unit import test_run_state_outage
from tests.unit.test_run_state_outage import Outage, Said

config = test_run_state_outage.config   # the fixture: an experiment for the fake provider

MONTHLY = BudgetsConfig(grace_s=0, project_monthly=Decimal(100))


@pytest.fixture(autouse=True)
def quick_wait(monkeypatch):
    """The end's wait in tenths of a second, not two minutes."""
    import fleet.run.state_wait as state_wait
    monkeypatch.setattr(state_wait, "RECORD_WAIT_S", 1.0)
    monkeypatch.setattr(state_wait, "RETRY_EVERY_S", 0.05)


class DownFromTick5(FakeMachines):
    """The command ticks until stopped; the database goes down at its 5th tick, and comes back
    `back_after_s` after the command ended (None: not before the test ends)."""

    def __init__(self, clock, outage, back_after_s: float | None = None):
        super().__init__(clock)
        self.outage, self.back_after_s = outage, back_after_s
        self.back: threading.Timer | None = None

    def execute(self, ctx, lease, command, *, setup=False, on_tick=None) -> ExecResult:
        try:
            for i in range(200):
                if ctx.cancel.is_set():
                    return ExecResult(ExitCode.CANCELLED, "0")
                self.outage.down = i >= 5
                self.clock.advance(1.0)
                on_tick()
                time.sleep(0.001)
            return ExecResult(0)
        finally:
            if self.back_after_s is not None:
                self.back = threading.Timer(self.back_after_s, lambda: setattr(self.outage, "down", False))
                self.back.start()


def _pipeline(config, machines, said, provider, **changes):
    return Pipeline(replace(config, command="x", heartbeat_ttl_s=20, gpus=4, budgets=MONTHLY, **changes),
                    NewLease(provider), events=said, machines=machines, clock=machines.clock)


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.is_alive()}


def test_an_outage_through_the_end_releases_and_leaves_the_outcome_in_summary_json(config, monkeypatch):
    outage, said = Outage(monkeypatch), Said()
    provider = FakeProvider(FakeSettings(price_per_hour=Decimal(36)))   # $0.01/s per machine
    pipeline = _pipeline(config, DownFromTick5(StepClock(), outage), said, provider)
    try:
        with pytest.raises(StateUnavailable) as raised:
            pipeline.run()
    finally:
        outage.down = False
    line = str(raised.value)
    assert " ended budget-stopped (exit 11) and its machines were released (lease " in line, line
    assert "but the state database could not record lease " in line and "the run's end" in line, line
    assert "`fleet down " in line, line
    run_dir = Path(line.split("its outcome is in ")[1].split()[0]).parent
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["status"], summary["exit_code"], summary["released"]) == ("budget-stopped", 11, True)
    assert summary["message"].startswith("state database unreachable for 11s"), summary["message"]
    assert summary["unrecorded"].startswith("the state database could not record lease "), summary["unrecorded"]
    assert "the run's cost (its last ledger rows)" in summary["unrecorded"]
    assert "the run's end (it shows as running)" in summary["unrecorded"]
    assert Decimal(summary["cost_usd"]) >= Decimal("0.16")   # the outage's seconds, counted in memory
    assert released(provider, summary["lease_id"])   # the machines are gone, as the line says
    waiting = [w for w in said.warnings if "waiting up to" in w]
    assert len(waiting) == 1 and waiting[0].endswith("for the state database to record the run"), said.warnings
    assert not [w for w in said.warnings if "machines end at their deadline" in w], said.warnings
    assert "fleet-telemetry" not in _threads()   # stopped though the run could not be recorded


def test_an_outage_that_ends_within_the_wait_records_the_run_whole(config, monkeypatch):
    outage, said = Outage(monkeypatch), Said()
    provider = FakeProvider(FakeSettings(price_per_hour=Decimal(36)))
    machines = DownFromTick5(StepClock(), outage, back_after_s=0.3)
    try:
        summary = _pipeline(config, machines, said, provider).run()
    finally:
        machines.back.join()
        outage.down = False
    assert (summary.status, summary.released, summary.unrecorded) == ("budget-stopped", True, None)
    state = open_state()
    try:
        assert state.get_run(summary.run_id)["status"] == "budget-stopped"
        assert state.get_lease(summary.lease_id).status == "released"
    finally:
        state.close()
    rows = ledger_for(summary.lease_id)
    assert not [r for r in rows if r.segment_id.endswith(KEPT_SUFFIX)], rows   # released: nothing kept
    assert any(r.kind == "close" for r in rows)
    assert Decimal(summary.cost_usd) == sum(r.cost_micro for r in rows) / Decimal(1_000_000) >= Decimal("0.16")
    assert len([w for w in said.warnings if "to record the run" in w]) == 1, said.warnings


def test_a_release_the_state_cannot_record_never_bills_the_machines_as_kept(config, monkeypatch):
    """Variant: the provider released the machines, the lease's status could not be written, the
    database answered again for the ledger: the machines were taken as still up, and kept segments
    opened for a destroyed lease, billed to its deadline."""
    real = StateStore.set_lease_status

    def set_lease_status(store, lease_id, status):
        if status == "released":
            raise StateUnavailable(f"state database {store.db.path}: database is locked")
        return real(store, lease_id, status)
    monkeypatch.setattr(StateStore, "set_lease_status", set_lease_status)
    said = Said()
    provider = FakeProvider(FakeSettings(price_per_hour=Decimal(36)))
    pipeline = Pipeline(replace(config, command="ok", gpus=4), NewLease(provider), events=said,
                        machines=FakeMachines(), clock=StepClock())
    with pytest.raises(StateUnavailable, match=r"ended succeeded \(exit 0\) and its machines were released"):
        pipeline.run()
    state = open_state()
    try:
        [run] = state.list_runs(limit=5)
    finally:
        state.close()
    assert released(provider, run["lease_id"])
    rows = ledger_for(run["lease_id"])
    assert not [r for r in rows if r.segment_id.endswith(KEPT_SUFFIX)], rows
    assert run["status"] == "succeeded"   # only the lease's status is missing
    summary = json.loads((Path(run["output_dir"]) / "summary.json").read_text())
    assert summary["released"] is True and summary.get("kept_until") is None
    assert summary["unrecorded"].startswith(f"the state database could not record lease {run['lease_id']}'s release")
    assert any(f"lease {run['lease_id']} was released, but the state database could not record that" in w
               for w in said.warnings), said.warnings


def test_the_end_waits_two_minutes_in_all_not_two_minutes_a_write():
    from fleet.run.state_wait import StateWait
    now, slept, said = [0.0], [], Said()

    def sleep(s):
        slept.append(s)
        now[0] += s

    def down():
        raise StateUnavailable("state database x: database is locked")
    wait = StateWait(None, said, wait_s=120, sleep=sleep, clock=lambda: now[0])
    with pytest.raises(StateUnavailable):
        wait(down, "lease l-1's release")
    assert sum(slept) == 120 and max(slept) <= 2.0
    assert wait.slept_s == 120      # what the end's `at` goes back by: the machines were gone meanwhile
    with pytest.raises(StateUnavailable):
        wait(down, "the run's end")      # the wait is spent: one try, no sleep
    assert sum(slept) == 120
    assert wait(lambda: "written", "the run record") == "written"   # back: written at once
    assert wait.gave_up == ["lease l-1's release", "the run's end"]
    assert said.warnings == ["state database x: database is locked: waiting up to 2m00s for the state "
                             "database to record the run"]


def test_a_second_ctrl_c_ends_the_wait_at_once():
    """The end's wait slept through every Ctrl-C (its handler only sets the run's `hurry`): a CI
    runner's kill then came before summary.json was written (review finding)."""
    import threading
    import time

    from fleet.run.state_wait import StateWait
    hurry = threading.Event()

    def down():
        raise StateUnavailable("state database x: database is locked")
    wait = StateWait(None, Said(), wait_s=120, stop=hurry)
    threading.Timer(0.3, hurry.set).start()
    started = time.monotonic()
    with pytest.raises(StateUnavailable):
        wait(down, "the run's end")
    assert time.monotonic() - started < 5
