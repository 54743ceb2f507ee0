"""A user's stop request that arrives while a run is already stopping for a lost machine (a spot
notice, a vanished node: its stop reason is "lost") must still be honoured: recovery does not lease
new machines for a run its user asked to stop. Before, the signal only hurried the lost attempt's
last steps and attempt 2 was leased anyway. The whole pipeline and run_managed run in-process
against the fake provider; the signal is a real SIGTERM to this process."""
from __future__ import annotations

import os
import signal
import threading
from dataclasses import replace
from decimal import Decimal

import pytest

from fleet.errors import ExitCode
from fleet.providers.fake import FakeProvider, FakeSettings
from fleet.run.lease import NewLease
from fleet.run.pipeline import Pipeline
from fleet.run.recovery import run_managed
from fleet.run.types import ExecResult
from tests.unit.test_released_from_outside import Phases, all_leases
from tests.unit.test_run_pipeline import FakeMachines, config  # noqa: F401 — the fixture

pytestmark = pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                                reason="signal handlers are installed by the main thread only")


class LostThenStopped(FakeMachines):
    """A machine is lost (the run starts stopping: reason "lost"), then the user's SIGTERM lands."""

    def execute(self, ctx, lease, command, *, setup=False, on_tick=None) -> ExecResult:
        if command != "lost-then-stopped":
            return super().execute(ctx, lease, command, setup=setup, on_tick=on_tick)
        self.ran.append((command, setup))
        ctx.request_stop("lost", "machine n1 vanished under the run")
        os.kill(os.getpid(), signal.SIGTERM)
        return ExecResult(ExitCode.CANCELLED, "1")


def test_a_stop_asked_for_while_a_lost_attempt_ends_is_not_answered_with_new_machines(config):  # noqa: F811
    provider = FakeProvider(FakeSettings(price_per_hour=Decimal(36)))
    attempts = []

    def attempt(cfg, *, options, events):
        attempts.append(options.run_id)
        return Pipeline(cfg, NewLease(provider), options=options, events=events, machines=LostThenStopped()).run()

    events = Phases()
    got = run_managed(replace(config, command="lost-then-stopped", recovery="always", max_restarts=3),
                      events=events, run=attempt)
    leases = all_leases()
    assert len(attempts) == 1 and len(leases) == 1, (attempts, [x.id for x in leases])
    assert not [d for name, d in events.lines if name == "recover"], events.lines
    assert (got.status, got.exit_code) == ("cancelled", ExitCode.CANCELLED), (got.status, got.message)
    assert "not resumed: the run was asked to stop" in got.message, got.message
    assert all(x.status == "released" for x in leases)


class LostThenSignalledBetween(FakeMachines):
    """Attempt 1 loses a machine; the SIGTERM lands after it ended, before attempt 2 (the recovery's
    own handlers take it: its default would kill the supervisor, the run unrecorded)."""

    def execute(self, ctx, lease, command, *, setup=False, on_tick=None) -> ExecResult:
        if command != "lost-once" or setup:
            return super().execute(ctx, lease, command, setup=setup, on_tick=on_tick)
        ctx.request_stop("lost", "machine n1 vanished under the run")
        return ExecResult(ExitCode.CANCELLED, "1")


def test_a_stop_signal_between_two_attempts_ends_the_recovery_with_nothing_leased(config, monkeypatch):  # noqa: F811
    import fleet.run.recovery as recovery
    provider = FakeProvider(FakeSettings(price_per_hour=Decimal(36)))
    attempts = []

    def attempt(cfg, *, options, events):
        attempts.append(options.run_id)
        if len(attempts) == 2:
            raise AssertionError("attempt 2 was started after the stop signal")
        return Pipeline(cfg, NewLease(provider), options=options, events=events,
                        machines=LostThenSignalledBetween()).run()
    real = recovery.latest_snapshots

    def checkpoints_then_signal(*a, **k):        # between the attempts: no run's handlers now
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*a, **k)
    monkeypatch.setattr(recovery, "latest_snapshots", checkpoints_then_signal)

    got = run_managed(replace(config, command="lost-once", recovery="always", max_restarts=3), events=Phases(),
                      run=attempt)
    assert len(attempts) == 1 and len(all_leases()) == 1
    assert (got.status, got.exit_code) == ("cancelled", ExitCode.CANCELLED), (got.status, got.message)
    assert "not resumed: the run was asked to stop" in got.message


def test_a_stop_asked_before_the_lease_leases_nothing(config):  # noqa: F811
    """The run's handlers take over after pinning and the budget: a stop that came before (or
    then) ends the run before any machine is asked for, on every provider (not only those that
    stop mid-lease)."""
    import threading

    from fleet.run.types import RunOptions
    provider = FakeProvider(FakeSettings(price_per_hour=Decimal(36)))
    asked_for = []
    real_lease = provider.lease
    provider.lease = lambda *a, **k: asked_for.append(a) or real_lease(*a, **k)
    asked = threading.Event()
    asked.set()
    got = Pipeline(config, NewLease(provider), options=RunOptions(stop_asked=asked), events=Phases(),
                   machines=FakeMachines()).run()
    assert (got.status, got.exit_code) == ("cancelled", ExitCode.CANCELLED), (got.status, got.message)
    assert asked_for == [], "machines were leased for a run asked to stop"
    assert [x.id for x in all_leases() if x.status in ("active", "leasing")] == []
