"""A sweep's admission rule when trials share a machine's GPUs: the machine is billed whole however
few of its GPUs are busy, so a trial starts only when the budget pays the machine (not the trial's
GPU share of it) until the longest trial on it could end."""
from __future__ import annotations

import threading
from types import SimpleNamespace

from fleet.sweep.params import Trial
from fleet.sweep.scheduler import Scheduler
from fleet.sweep.slots import Slot

HOUR = 3600.0
PRICE = 32_000_000          # $32/h for one 8-GPU machine, in micro-dollars


def _scheduler(tmp_path, budget_usd: float):
    spec = SimpleNamespace(trials=[Trial(i, (("x", str(i)),)) for i in range(1, 5)], trial_timeout_s=HOUR,
                           idle_release_s=0, sweep_id="s-1", stop_if=None, trial_command=lambda t: "true")
    s = Scheduler(spec, provider=None, config=None, pins=None, events=None, sweep_dir=tmp_path)
    s.machine_micro, s.timeout_s = PRICE, HOUR
    s.slots = [Slot(("m0",), gpus=(i,), leaf=f"trial-{i}") for i in range(8)]
    ctx = SimpleNamespace(cancel=threading.Event(), lease=None, offer=SimpleNamespace(max_duration_s=HOUR),
                          budget=SimpleNamespace(remaining_micro=lambda: int(budget_usd * 1e6), spent_micro=lambda: 0))
    return s, ctx


def test_a_budget_that_pays_one_gpu_share_but_not_the_machine_starts_nothing(tmp_path):
    s, ctx = _scheduler(tmp_path, 10)
    assert s._next(ctx, s.slots[0]) is None, "a trial started that the budget cannot pay the machine for"
    reasons = {r.reason for r in s.results.values()}
    assert len(s.results) == 4 and all(r.state == "not-started" for r in s.results.values())
    assert any("one trial may cost up to $32" in r for r in reasons), reasons


def test_trials_sharing_one_machine_are_paid_for_once(tmp_path):
    """$40 pays the machine for the hour: trials on it start, each adding nothing to what the machine
    already costs."""
    s, ctx = _scheduler(tmp_path, 40)
    assert s._next(ctx, s.slots[0]).name == "t001"
    assert s._next(ctx, s.slots[1]).name == "t002"
    assert s._committed(s.slots[2]) <= PRICE + 1000        # a third on it: still one machine-hour
