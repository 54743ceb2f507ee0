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
    shrink = PoolShrink(SimpleNamespace(name="slurm"), events)
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
