"""The reset's reading of the staged code (fleet/sweep/scheduler.py `_reset`): a state that differs
from the one read after setup retires the machine, once, naming the trial; a reset that could not
read it (no answer, an old agent) says nothing about the code and retires nothing."""
from __future__ import annotations

from types import SimpleNamespace

from fleet.sweep import scheduler as scheduler_module
from fleet.sweep.reset import ResetResult
from fleet.sweep.retire import Retirements
from fleet.sweep.scheduler import Scheduler
from fleet.sweep.trial_env import TrialEnvironments


def _scheduler(states: dict[str, str | None]):
    warned: list[str] = []
    s = Scheduler.__new__(Scheduler)
    s.environments = TrialEnvironments()
    s.environments.code.update({"m-0": "after-setup", "m-1": "after-setup"})
    s.events = SimpleNamespace(warn=warned.append)
    s.resets_unclean = []
    s.machines_out = Retirements()
    ctx = SimpleNamespace(lease=SimpleNamespace(machines=[SimpleNamespace(id=m) for m in states]))
    slot = SimpleNamespace(machine_ids=list(states), leaf="trial-0", label="m-0+m-1")
    return s, ctx, slot, warned


def _out(s) -> dict[str, str]:
    """Per machine the resets retired: what a slot of it alone then says of it."""
    return {m: s.machines_out.of([m]).lost for m in ("m-0", "m-1") if s.machines_out.of([m]) is not None}


def test_only_a_read_state_that_differs_retires_a_machine(monkeypatch):
    states = {"m-0": None, "m-1": "changed"}
    monkeypatch.setattr(scheduler_module, "env_paths", lambda lease, m: ("", "/w/work", "/w/data"))
    monkeypatch.setattr(scheduler_module, "reset_machine",
                        lambda m, run_id, leaf, env, agent_state=None: ResetResult(m.id, 0, True, code_state=states[m.id]))
    s, ctx, slot, warned = _scheduler(states)
    assert s._reset(ctx, slot, "r-1") and s._reset(ctx, slot, "r-2")
    assert _out(s) == {"m-1": "had their staged code or data changed by r-1"}
    assert warned == ["machine m-1: r-1 changed the staged code or data there: no more trials on it (their "
                      "records pin them as staged)"]


def test_a_reset_that_ended_leftover_processes_says_so(monkeypatch):
    monkeypatch.setattr(scheduler_module, "env_paths", lambda lease, m: ("", "/w/work", "/w/data"))
    monkeypatch.setattr(scheduler_module, "reset_machine",
                        lambda m, run_id, leaf, env, agent_state=None: ResetResult(m.id, 3 if m.id == "m-1" else 0, True))
    s, ctx, slot, warned = _scheduler({"m-0": None, "m-1": None})
    assert s._reset(ctx, slot, "r-1")
    assert warned == ["machine m-1: r-1 left 3 process(es) running after its command ended; the reset ended them"]


def test_a_changed_site_packages_state_retires_the_machine_once_and_an_unread_one_does_not(monkeypatch):
    states = {"m-0": None, "m-1": "patched"}
    monkeypatch.setattr(scheduler_module, "env_paths", lambda lease, m: ("/w/venv", "/w/work", "/w/data"))
    monkeypatch.setattr(scheduler_module, "reset_machine",
                        lambda m, run_id, leaf, env, agent_state=None: ResetResult(m.id, 0, True, site_state=states[m.id]))
    s, ctx, slot, warned = _scheduler(states)
    s.environments.site.update({"m-0": "after-setup", "m-1": "after-setup"})
    assert s._reset(ctx, slot, "r-1") and s._reset(ctx, slot, "r-2")
    assert _out(s) == {"m-1": "had their venv's site-packages changed by r-1"}   # and not its code
    assert warned == ["machine m-1: r-1 changed files in the venv's site-packages there: no more trials on it "
                      "(their records would show the pool's environment)"]
