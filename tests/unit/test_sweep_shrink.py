"""Giving back idle pool machines (fleet/sweep/shrink.py) on its own: which providers can, what a
provider without the capability (or a failing one) leaves, and the heartbeat forgetting them."""
from __future__ import annotations

import time
from datetime import timedelta
from types import SimpleNamespace

from fleet.heartbeat import Heartbeat
from fleet.models import Lease, Machine, utcnow
from fleet.providers.base import ReleasesMachines
from fleet.sweep.shrink import PoolShrink


class Recorder:
    def __init__(self):
        self.phases, self.warnings = [], []

    def phase(self, name, detail=""):
        self.phases.append((name, detail))

    def log(self, *a):
        pass

    def warn(self, message):
        self.warnings.append(message)


def _lease(n: int = 2) -> Lease:
    now = utcnow()
    machines = [Machine(id=f"L-n{i}", lease_id="L", node_rank=i, host="127.0.0.1", port=1, user="u",
                        key_path="k", host_key="h", workdir="/w", gpu_slots=(0,)) for i in range(n)]
    return Lease(id="L", provider="p", template="t", machines=machines, created_at=now,
                 deadline=now + timedelta(minutes=5), max_deadline=now + timedelta(hours=1))


class StateSpy:
    def __init__(self):
        self.released = []

    def release_machines(self, lease_id, ids, at):
        self.released.append((lease_id, list(ids)))


class BudgetSpy:
    def __init__(self):
        self.closed = []

    def close_machines(self, ids):
        self.closed.append(set(ids))


def _ctx(lease):
    return SimpleNamespace(lease=lease, heartbeat=None, budget=BudgetSpy(), state=StateSpy())


class Partial(ReleasesMachines):
    name = "partial"

    def __init__(self, fail: bool = False):
        self.calls, self.fail = [], fail

    def release_machines(self, lease, machine_ids):
        if self.fail:
            raise RuntimeError("the API said no")
        self.calls.append(list(machine_ids))


def test_released_machines_leave_the_lease_the_ledger_and_the_state():
    lease, events, provider = _lease(), Recorder(), Partial()
    ctx = _ctx(lease)
    assert PoolShrink(provider, events).release(ctx, ["L-n1"], "no trial left for them") == ["L-n1"]
    assert provider.calls == [["L-n1"]]
    assert [m.id for m in ctx.lease.machines] == ["L-n0"]
    assert ctx.budget.closed == [{"L-n1"}] and ctx.state.released == [("L", ["L-n1"])]
    assert "released 1 machine(s) (L-n1); 1 still up" in events.phases[-1][1]


def test_a_provider_without_the_capability_keeps_them_and_says_so_once():
    lease, events = _lease(), Recorder()
    ctx = _ctx(lease)
    shrink = PoolShrink(SimpleNamespace(name="static"), events)
    assert shrink.release(ctx, ["L-n1"], "no trial left for them") == []
    assert shrink.release(ctx, ["L-n0"], "no trial left for them") == []
    assert len(ctx.lease.machines) == 2 and ctx.budget.closed == [] and ctx.state.released == []
    assert len(events.phases) == 1 and "cannot release part of a lease" in events.phases[0][1]


def test_a_failed_release_keeps_billing_and_warns():
    lease, events = _lease(), Recorder()
    ctx = _ctx(lease)
    assert PoolShrink(Partial(fail=True), events).release(ctx, ["L-n1"], "idle") == []
    assert len(ctx.lease.machines) == 2 and ctx.budget.closed == []     # still billed until the pool ends
    assert "could not release idle machine(s) L-n1" in events.warnings[0]


def test_a_release_that_gave_back_some_stops_billing_those_and_warns_for_the_rest():
    # Slurm: a batch host released with another node; the other node left the job, the batch host stays.
    class Some(Partial):
        def release_machines(self, lease, machine_ids):
            err = RuntimeError("Slurm cannot take node n1 out of job 5: the job's batch step runs there")
            err.released = ["L-n1"]
            raise err

    lease, events = _lease(), Recorder()
    ctx = _ctx(lease)
    assert PoolShrink(Some(), events).release(ctx, ["L-n0", "L-n1"], "idle") == ["L-n1"]
    assert ctx.budget.closed == [{"L-n1"}] and ctx.state.released == [("L", ["L-n1"])]
    assert [m.id for m in ctx.lease.machines] == ["L-n0"]                  # still billed until the pool ends
    assert events.warnings == ["could not release idle machine(s) L-n0 (Slurm cannot take node n1 out of job 5: "
                               "the job's batch step runs there); billed until the sweep ends"]
    assert "released 1 machine(s) (L-n1)" in events.phases[-1][1]


def test_a_forgotten_machine_is_never_lost_and_never_beaten():
    lease = _lease()
    lease.deadline = utcnow() + timedelta(seconds=0.2)   # no beat ever reached them: both past it soon
    beat = Heartbeat(lease, 0.3)
    beat.forget({"L-n1"})
    time.sleep(0.5)                                     # both first deadlines have passed
    assert beat.lost(slack_s=0) == {"L-n0"}
    beat._extend = lambda machine, ttl: (_ for _ in ()).throw(AssertionError(f"beat {machine.id}"))  # noqa: E731
    beat._in_flight.add("L-n0")                         # only L-n1 could be beaten now, and it is forgotten
    beat.beat(1.0)
    beat.stop()


# ---------------------------------------------------------------- the scheduler's side (scheduler.py)

def _scheduler(tmp_path, trials: int, idle_release_s: float, provider):
    from fleet.run.types import PinnedInputs
    from fleet.sweep.params import Trial
    from fleet.sweep.scheduler import Scheduler
    from fleet.sweep.slots import Slot
    from fleet.sweep.spec import SweepSpec
    spec = SweepSpec(command="true", trials=tuple(Trial(i + 1, (("x", str(i + 1)),)) for i in range(trials)),
                     parallel=2, idle_release_s=idle_release_s)
    sched = Scheduler(spec, provider=provider, config=None, pins=PinnedInputs(), events=Recorder(), sweep_dir=tmp_path)
    sched.slots = [Slot(("L-n0",)), Slot(("L-n1",))]
    return sched


class TightBudget:
    """What is left pays one more trial's worst case only once nothing else runs."""

    def __init__(self, left: int):
        self.left = left

    def remaining_micro(self):
        return self.left

    def close_machines(self, ids):
        self.closed = set(ids)


def _running_ctx(budget):
    import threading
    lease = _lease()
    return SimpleNamespace(lease=lease, heartbeat=None, budget=budget, state=StateSpy(), cancel=threading.Event(),
                           offer=SimpleNamespace(max_duration_s=600))


def test_a_slot_waiting_on_the_budget_retires_after_idle_release_and_its_machine_goes(tmp_path):
    from fleet.sweep.scheduler import _Running
    provider = Partial()
    sched = _scheduler(tmp_path, 3, 0.4, provider)
    sched.machine_micro, sched.timeout_s = 3_600_000_000, 1.0   # a machine for one trial: $1
    ctx = _running_ctx(TightBudget(1_000_010))           # the running trial holds almost all of it
    first = sched.queue.popleft()
    sched.running[first.name] = _Running(first, time.monotonic(), ("L-n0",))  # trial 1 runs on slot 0
    start = time.monotonic()
    assert sched._next(ctx, sched.slots[1]) is None        # slot 1: no trial fits while trial 1 runs…
    assert time.monotonic() - start >= 0.4                 # …and it waited --idle-release for one
    assert len(sched.queue) == 2                           # the trials left are still queued (slot 0 takes them)
    sched._retire(ctx, 1)
    sched.shrink.join()                                    # given back on a thread of its own
    assert provider.calls == [["L-n1"]] and [m.id for m in ctx.lease.machines] == ["L-n0"]
    assert "wait on the budget (--idle-release)" in sched.events.phases[-1][1]


def test_an_empty_queue_retires_at_once_but_the_last_running_slot_keeps_its_machine(tmp_path):
    provider = Partial()
    sched = _scheduler(tmp_path, 1, 300, provider)         # a long --idle-release does not delay this
    ctx = _running_ctx(TightBudget(10 ** 9))
    assert sched._next(ctx, sched.slots[0]) is not None     # slot 0 takes the only trial
    start = time.monotonic()
    assert sched._next(ctx, sched.slots[1]) is None and time.monotonic() - start < 1
    sched._retire(ctx, 1)
    sched.shrink.join()
    assert provider.calls == [["L-n1"]]
    sched.running.clear()                                   # trial 1 is done: nothing runs any more
    sched._retire(ctx, 0)
    sched.shrink.join()
    assert provider.calls == [["L-n1"]]                     # the pool's own release ends L-n0 now


def test_a_machine_shared_by_slots_goes_only_when_all_its_slots_are_idle(tmp_path):
    from fleet.sweep.scheduler import _Running
    from fleet.sweep.slots import Slot
    provider = Partial()
    sched = _scheduler(tmp_path, 3, 0, provider)
    sched.slots = [Slot(("L-n0",), (0,), "trial-0"), Slot(("L-n0",), (1,), "trial-1"), Slot(("L-n1",))]
    ctx = _running_ctx(TightBudget(10 ** 9))
    trial = sched.queue.popleft()
    sched.running[trial.name] = _Running(trial, time.monotonic(), ("L-n1",))  # runs on slot 2 (L-n1)
    sched.queue.clear()
    sched._retire(ctx, 0)
    sched.shrink.join()
    assert provider.calls == []                             # L-n0's other slot has not retired yet
    sched._retire(ctx, 1)
    sched.shrink.join()
    assert provider.calls == [["L-n0"]]


def test_idle_release_is_read_from_the_table_and_the_flag(tmp_path):
    from fleet.cli.sweep import build_spec
    from fleet.config.loader import load_config
    (tmp_path / "fleet.toml").write_text('project = "p"\ncommand = "true"\ntemplate = "local-1gpu"\n'
                                         '[sweep]\nparams = { x = [1, 2] }\nidle_release = "2m"\n')
    config = load_config(cwd=tmp_path)
    kw = dict(samples=None, seed=None, parallel=None, gpus_per_trial=None, trial_timeout_s=None, budget=None)
    assert build_spec(config, config.sweep, None, [], **kw).idle_release_s == 120
    assert build_spec(config, config.sweep, None, [], idle_release_s=5, **kw).idle_release_s == 5
    (tmp_path / "fleet.toml").write_text('project = "p"\ncommand = "true"\n[sweep]\nparams = { x = [1] }\n')
    config = load_config(cwd=tmp_path)
    assert build_spec(config, config.sweep, None, [], **kw).idle_release_s == 0     # default: at once
