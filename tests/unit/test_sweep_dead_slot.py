"""A slot whose machines stop answering must not eat the sweep's queue: the trial that found them
gone keeps its run id (so the scheduler checks exactly those machines and retires the slot), and a
trial never starts beside what the last one left when the reset after it did not reach the machines.
The scheduler runs for real; the trial's pipeline and the machines are fakes."""
from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

import fleet.run.pipeline as pipeline_module
import fleet.run.pool_lease as pool_lease_module
from fleet.config.loader import load_config
from fleet.errors import MachineUnreachable
from fleet.sweep.params import Trial
from fleet.sweep.scheduler import Scheduler
from fleet.sweep.slots import Slot


class Events:
    def __init__(self):
        self.lines = []

    def phase(self, name, detail=""):
        self.lines.append(f"{name}: {detail}")

    def warn(self, message):
        self.lines.append(f"warning: {message}")

    def log(self, *a):
        pass


@pytest.fixture
def sweep(tmp_path, monkeypatch):
    monkeypatch.setattr(pool_lease_module, "PoolLease", lambda *a, **k: None)
    monkeypatch.setattr(pool_lease_module, "sub_lease", lambda *a, **k: None)
    trials = [Trial(i, (("x", str(i)),)) for i in range(1, 5)]
    spec = SimpleNamespace(trials=trials, trial_timeout_s=None, idle_release_s=0, sweep_id="s-1", stop_if=None,
                           trial_command=lambda t: "true")
    (tmp_path / "fleet.toml").write_text('project = "t"\ncommand = "true"\n')
    config = load_config(tmp_path / "fleet.toml")
    scheduler = Scheduler(spec, provider=None, config=config, pins=None, events=Events(), sweep_dir=tmp_path)
    ctx = SimpleNamespace(cancel=threading.Event(), lease=None, budget=None, run_id="r-pool")
    slot = Slot(("m0",))
    scheduler.slots = [slot]
    return scheduler, ctx, slot


def _fake_pipeline(monkeypatch, behaviour):
    """Pipeline(...).run() calls behaviour(n, run_id, machines); records each run id it was given."""
    given = []

    class FakePipeline:
        def __init__(self, config, source, *, options, machines, **kw):
            self.options, self.machines = options, machines

        def run(self):
            given.append(self.options.run_id)
            return behaviour(len(given), self.options.run_id, self.machines)
    monkeypatch.setattr(pipeline_module, "Pipeline", FakePipeline)
    return given


def _succeeded(run_id):
    return SimpleNamespace(status="succeeded", run_id=run_id, exit_code=0, duration_s=1.0, cost_usd=None,
                           would_cost_usd=None, message=None)


def test_a_trial_that_finds_its_machines_gone_retires_the_slot_instead_of_failing_the_queue(sweep, monkeypatch):
    scheduler, ctx, slot = sweep

    def gone(n, run_id, machines):
        raise MachineUnreachable("machine m0 (x@127.0.0.1:1) did not answer SSH within 120s")
    given = _fake_pipeline(monkeypatch, gone)
    checked = []
    monkeypatch.setattr(scheduler, "_reset", lambda ctx, slot, run_id: checked.append(run_id) or False)
    scheduler._trials_on(ctx, 0, slot, 600, [])
    assert len(given) == 1, f"{len(given)} trials were run on machines known to be gone"
    result = scheduler.results["t001"]
    assert result.state == "error" and result.run_id == given[0] and checked == given
    assert scheduler.lost_slots == 1 and [t.name for t in scheduler.queue] == ["t002", "t003", "t004"]
    assert any("no longer answer" in line for line in scheduler.events.lines)


def test_no_trial_starts_beside_the_last_ones_leftovers_when_its_reset_failed(sweep, monkeypatch):
    scheduler, ctx, slot = sweep

    def behaviour(n, run_id, machines):
        if n == 1:
            machines.after_collect(run_id)         # outputs home: the early reset starts (and fails)
            return _succeeded(run_id)
        machines._after_reset()                    # what execute() does before the trial's command
        return _succeeded(run_id)
    given = _fake_pipeline(monkeypatch, behaviour)
    monkeypatch.setattr(scheduler, "_reset", lambda ctx, slot, run_id: False)
    scheduler._trials_on(ctx, 0, slot, 600, [])
    assert len(given) == 2 and scheduler.lost_slots == 1
    # it never started (not beside the leftovers, and not counted as an errored trial): it goes back
    # to the queue for another slot
    assert "t002" not in scheduler.results and "t002" not in scheduler.running
    assert [t.name for t in scheduler.queue] == ["t002", "t003", "t004"]
    assert any(f"could not be reset after {given[0]}" in line and "t002 goes back to the queue" in line
               for line in scheduler.events.lines), scheduler.events.lines


def test_a_reset_that_failed_once_is_tried_again_for_the_trial_it_was_meant_for(sweep, monkeypatch):
    scheduler, ctx, slot = sweep

    def behaviour(n, run_id, machines):
        if n == 1:
            machines.after_collect(run_id)
        else:
            machines._after_reset()
        return _succeeded(run_id)
    given = _fake_pipeline(monkeypatch, behaviour)
    resets = []

    def flaky_reset(ctx, slot, run_id):
        resets.append(run_id)
        return len(resets) > 1                     # the early reset fails, the retry reaches the machines
    monkeypatch.setattr(scheduler, "_reset", flaky_reset)
    scheduler.spec.trials = scheduler.spec.trials[:2]
    scheduler.queue = type(scheduler.queue)(scheduler.spec.trials)
    scheduler._trials_on(ctx, 0, slot, 600, [])
    assert [scheduler.results[t].state for t in ("t001", "t002")] == ["succeeded", "succeeded"]
    assert resets[:2] == [given[0], given[0]], resets        # both for trial 1's leftovers
    assert scheduler.lost_slots == 0


def test_a_reset_that_reached_the_machine_but_left_it_unclean_runs_no_trial_there(sweep, monkeypatch):
    """A reset that answered yet could not confirm it cleaned up (a process of the trial that would
    not end, outputs it could not remove, its own snippet failing) was only warned about: the next
    trial ran beside the leftovers. It counts as a failed reset: tried once more, then the trial
    goes back to the queue and the slot is retired."""
    import fleet.sweep.scheduler as scheduler_module
    from fleet.sweep.reset import ResetResult
    scheduler, ctx, slot = sweep
    from datetime import timedelta

    from fleet.models import utcnow
    ctx.lease = SimpleNamespace(machines=[SimpleNamespace(id="m0")], max_deadline=utcnow() + timedelta(hours=1))
    monkeypatch.setattr(scheduler_module, "env_paths", lambda lease, m: ("", "/w/work", "/w/data"))
    resets = []
    monkeypatch.setattr(scheduler_module, "reset_machine",
                        lambda m, run_id, leaf, env, agent_state=None: resets.append(run_id) or ResetResult(m.id, 1, False))

    def behaviour(n, run_id, machines):
        if n == 1:
            machines.after_collect(run_id)
            return _succeeded(run_id)
        try:
            machines._after_reset()
        finally:   # the pipeline's collect stage runs all the same (it finds no outputs)
            machines.after_collect(run_id)
    given = _fake_pipeline(monkeypatch, behaviour)
    scheduler.spec.trial_timeout_s = 600
    scheduler.run(ctx, [slot], None)
    # the reset, then its retry; none after the refused trial, which never ran there (it raced the
    # slot's release: "could not reset machines … after r-…: … does not answer SSH")
    for thread in threading.enumerate():      # a reset started for the refused trial would be here
        if thread.name.startswith("sweep-reset-"):
            thread.join()
    assert len(given) == 2 and resets == [given[0], given[0]], resets
    assert scheduler.lost_slots == 1
    assert "warning: machine m0: could not confirm the reset after " + given[0] in scheduler.events.lines
    # What the user reads for the trials left: the machines answered, so not "lost", but what happened.
    assert [scheduler.results[t].state for t in ("t002", "t003", "t004")] == ["not-started"] * 3
    assert scheduler.results["t002"].reason == (
        f"no slot was left to run it (1 of 1 retired: machines m0 could not be reset after {given[0]} "
        "(machine m0: could not confirm it left it clean))")
    assert any(f"could not be reset after {given[0]}" in line and "t002 goes back to the queue" in line
               for line in scheduler.events.lines), scheduler.events.lines
