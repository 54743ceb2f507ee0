"""A run's cleanup (collect, heartbeat stop, release, record) runs whole whatever raises in it: the
caller's Events sink, an observer, a step itself (fleet/run/cleanup.py). In-process, against the
fake provider and the fake machines of test_run_pipeline.py."""
from __future__ import annotations

import gc
import json
import os
import threading
from decimal import Decimal
from pathlib import Path

import pytest

from fleet.providers.fake import FakeProvider, FakeSettings
from fleet.run.lease import NewLease
from fleet.run.observers import RunObserver
from fleet.run.pipeline import Pipeline
from fleet.run.types import Collected
from fleet.state import open_state
from tests.unit import test_run_pipeline
from tests.unit.test_run_pipeline import FakeMachines, NoBeats, released

config = test_run_pipeline.config   # the fixture: an experiment for the fake provider


class Boom(Exception):
    pass


class Sink:
    """An Events sink that raises `error` from `method` when `when(args)` holds."""

    def __init__(self, method: str, when=lambda *args: True, error: BaseException | None = None):
        self.method, self.when, self.error = method, when, error or Boom(f"{method} boom")
        self.calls: list[tuple] = []

    def _maybe(self, method: str, *args) -> None:
        self.calls.append((method, *args))
        if method == self.method and self.when(*args):
            raise self.error

    def phase(self, name, detail=""):
        self._maybe("phase", name, detail)

    def log(self, label, stream, line):
        self._maybe("log", label, stream, line)

    def warn(self, message):
        self._maybe("warn", message)


class Beats(NoBeats):
    def __init__(self):
        super().__init__()
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True


class TalkingMachines(FakeMachines):
    """Fake machines that report progress on the sink as the real ones do while collecting."""

    def __init__(self, collect_raises: BaseException | None = None):
        super().__init__()
        self.beats = Beats()
        self.collect_raises = collect_raises

    def heartbeat(self, lease, ttl_s, *, caps, on_deadline, warn, publish=None):
        return self.beats

    def collect(self, ctx, lease) -> Collected:
        ctx.events.phase("collect", f"fetching outputs into {ctx.run_dir}")
        ctx.events.warn("outputs of node 0 did not all come home")
        if self.collect_raises is not None:
            raise self.collect_raises
        return Collected(files=3)


def start(config, *, events=None, observers=(), machines=None):
    provider = FakeProvider(FakeSettings(price_per_hour=Decimal(36)))
    machines = machines or TalkingMachines()
    pipeline = Pipeline(config, NewLease(provider), events=events, observers=observers, machines=machines)
    return pipeline, provider, machines


def the_only_run() -> dict:
    state = open_state()
    try:
        [run] = state.list_runs(limit=10)
        return run
    finally:
        state.close()


def assert_cleaned_up(provider, machines, run: dict, status: str = "succeeded") -> None:
    """Released, heartbeat stopped, the run final in the state and in summary.json."""
    assert released(provider, run["lease_id"])
    assert machines.beats.stopped
    assert run["status"] == status, run
    summary = json.loads((Path(run["output_dir"]) / "summary.json").read_text())
    assert (summary["status"], summary["released"]) == (status, True)


@pytest.mark.parametrize("sink", [
    Sink("phase", lambda name, detail: name == "collect"),
    Sink("phase", lambda name, detail: name == "release"),
    Sink("warn", lambda message: "did not all come home" in message),      # collect warns
    Sink("phase", lambda name, detail: name == "collect", KeyboardInterrupt()),
], ids=["phase-collect", "phase-release", "warn-in-collect", "interrupt-in-collect"])
def test_a_sink_raising_in_cleanup_still_releases_and_records_then_raises_its_error(config, sink):
    """Red-team finding: a progress widget raising in phase("collect") left the lease up, kept
    alive by the heartbeat, the run `running` with no summary.json."""
    pipeline, provider, machines = start(config, events=sink)
    with pytest.raises(type(sink.error)) as raised:
        pipeline.run()
    assert raised.value is sink.error
    run = the_only_run()
    assert_cleaned_up(provider, machines, run)
    if sink.method == "phase" and not isinstance(sink.error, KeyboardInterrupt):
        assert ("phase", "release", "destroying 2 machine(s)") in sink.calls   # every step still reported


@pytest.mark.parametrize("error, why", [(Boom("collect broke"), "Boom: collect broke"),
                                        (KeyboardInterrupt(), "KeyboardInterrupt")])
def test_a_cleanup_step_that_raises_leaves_the_later_ones_to_run(config, error, why):
    """And a collect that raised is no clean success (red-team finding: the run was recorded
    `succeeded` whatever came home): the outputs are judged incomplete, as a cut transfer's are."""
    pipeline, provider, machines = start(config, machines=TalkingMachines(collect_raises=error))
    with pytest.raises(type(error)):
        pipeline.run()
    run = the_only_run()
    assert_cleaned_up(provider, machines, run, status="error")
    summary = json.loads((Path(run["output_dir"]) / "summary.json").read_text())
    assert summary["exit_code"] == 10
    assert summary["message"] == f"the command succeeded, but not all outputs came home: collecting raised {why}"
    assert summary["outputs_incomplete"] == [f"collecting raised {why}"]


class Finishing(RunObserver):
    def __init__(self, error: BaseException | None = None):
        self.error, self.seen = error, []

    def on_finish(self, ctx, summary) -> None:
        self.seen.append((summary.status, ctx.state.get_run(ctx.run_id)["status"],
                          (ctx.run_dir / "summary.json").exists()))
        if self.error is not None:
            raise self.error


@pytest.mark.parametrize("error", [KeyboardInterrupt(), SystemExit(3)])
def test_an_observer_interrupting_on_finish_leaves_the_run_final_and_the_others_called(config, error):
    """Red-team finding: a KeyboardInterrupt from on_finish left the run `running`, no summary.json."""
    first, after = Finishing(error), Finishing()
    pipeline, provider, machines = start(config, observers=[first, after])
    with pytest.raises(type(error)):
        pipeline.run()
    assert first.seen == after.seen == [("succeeded", "succeeded", True)]   # called once the state is final
    assert_cleaned_up(provider, machines, the_only_run())


def test_a_sink_whose_warn_raises_on_an_observers_failure_leaves_the_run_final(config):
    sink = Sink("warn", lambda message: "on_finish failed" in message)
    pipeline, provider, machines = start(config, events=sink, observers=[Finishing(Boom("observer"))])
    with pytest.raises(Boom, match="warn boom"):
        pipeline.run()
    assert_cleaned_up(provider, machines, the_only_run())


def test_a_sink_whose_log_raises_gets_no_more_lines_and_its_error_comes_after_the_run(config):
    """Red-team finding: log() raising killed the experiment's output pump, and the run ended as
    lost machines ("connection lost: user boom"); a KeyboardInterrupt from log() was swallowed."""
    from fleet.run.cleanup import GuardedEvents
    sink = Sink("log", error=KeyboardInterrupt())
    guarded = GuardedEvents(sink)
    guarded.log("0", "out", "one")
    guarded.log("0", "out", "two")
    assert [c for c in sink.calls if c[0] == "log"] == [("log", "0", "out", "one")]
    assert guarded.error is sink.error


def test_each_run_closes_the_state_connections_it_opened(config):
    """Red-team finding: every up() left the state database's descriptors open until the GC ran."""
    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))
    pipeline, _, _ = start(config)
    pipeline.run()   # imports, the database's creation
    gc.collect()
    gc.disable()
    try:
        before = fds()
        for _ in range(3):
            start(config, machines=TalkingMachines())[0].run()
        assert fds() == before
    finally:
        gc.enable()


def test_the_state_closes_the_connections_of_threads_that_ended(fleet_home):
    state = open_state()
    try:
        conns = []
        worker = threading.Thread(target=lambda: conns.append(state.db._conn()))
        worker.start()
        worker.join()
        state.close()
        with pytest.raises(Exception, match="closed"):
            conns[0].execute("SELECT 1")
    finally:
        state.close()


def test_the_telemetry_thread_stops_when_the_run_cannot_be_recorded(config, monkeypatch):
    """Red-team finding: fleet's own telemetry fetcher was stopped only by on_finish, which a run
    whose record step raised never calls: its thread went on reconnecting every 5 s for ever."""
    from fleet.state.store import StateStore

    def finish_run(*args, **kwargs):
        raise Boom("finish_run broke")
    monkeypatch.setattr(StateStore, "finish_run", finish_run)
    pipeline, provider, machines = start(config, machines=TickingMachines())
    with pytest.raises(Boom, match="finish_run broke"):
        pipeline.run()
    from fleet.run.telemetry_fetch import TelemetryFetch
    [telemetry] = [o for o in pipeline.observers if isinstance(o, TelemetryFetch)]
    fetcher = telemetry._thread
    assert fetcher is not None and not fetcher.is_alive()


class TickingMachines(TalkingMachines):
    """The command ticks once, as the execute loop does (the telemetry fetcher starts then)."""

    def execute(self, ctx, lease, command, *, setup=False, on_tick=None):
        on_tick()
        return super().execute(ctx, lease, command, setup=setup, on_tick=on_tick)
