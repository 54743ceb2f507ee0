"""`fleet down` releases leases side by side (fleet/leases.py): providers' describe/release calls run
in a bounded pool while every state write stays on the calling thread; one lease that fails to
release leaves the others released and is named."""
from __future__ import annotations

import threading

import pytest

from fleet import leases
from fleet.errors import InfrastructureError
from fleet.ids import new_lease_id
from fleet.plan import make_plan
from fleet.providers.fake import FakeProvider
from fleet.state import open_state


class _Gate(FakeProvider):
    """The fake provider, whose release of each lease waits until `parties` releases are under way
    at once: serial releases never get there (the barrier breaks after its timeout)."""

    barrier: threading.Barrier
    fail: set = set()

    def release(self, lease):
        self.barrier.wait()
        if lease.id in self.fail:
            raise InfrastructureError(f"cannot reach the API for {lease.id}")
        super().release(lease)


def _leases(state, count: int) -> list[str]:
    provider = FakeProvider()
    ids = []
    for _ in range(count):
        plan = make_plan(provider="fake", template=next(iter(provider.templates().values())), gpus=None,
                         max_duration_s=600, heartbeat_ttl_s=300, project="p", user="tester")
        lease = provider.lease(plan, new_lease_id(), 300)
        state.save_lease(lease)
        ids.append(lease.id)
    return ids


@pytest.fixture
def gate(monkeypatch):
    def use(parties: int, fail: set = frozenset()):
        _Gate.barrier = threading.Barrier(parties, timeout=30)
        _Gate.fail = set(fail)
        monkeypatch.setattr(leases, "_provider", lambda name: _Gate())
    return use


def test_down_all_releases_leases_side_by_side(fleet_home, gate):
    state = open_state()
    ids = _leases(state, 4)
    gate(4)
    released = leases.down([], all_leases=True, state=state)
    assert set(ids) <= set(released)
    assert all(state.lease_status(i)[0] == "released" for i in ids)
    assert state.list_leases(active_only=True) == []


def test_one_lease_that_cannot_be_released_is_named_and_the_others_are_released(fleet_home, gate):
    state = open_state()
    ids = _leases(state, 3)
    gate(3, fail={ids[1]})
    with pytest.raises(InfrastructureError, match=ids[1]):
        leases.down(ids, state=state)
    assert [state.lease_status(i)[0] for i in ids] == ["released", "active", "released"]


def test_naming_leases_and_all_together_is_refused_before_releasing_any(fleet_home, tmp_path):
    """`fleet down --all l-teammate` released every lease of yours and dropped the named one unread: a
    teammate's lease (or a typo) stayed up, billed, while the command said it released. Now refused."""
    from fleet.errors import UsageError
    from tests.conftest import run_fleet
    state = open_state()
    ids = _leases(state, 2)
    with pytest.raises(UsageError, match="name leases or use --all, not both"):
        leases.down([ids[0]], all_leases=True, state=state)
    proc = run_fleet(["down", "--all", "l-0123abcd", "--json"], cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "fleet: error: name leases or use --all, not both (named: l-0123abcd) (--all releases every live lease of "
        "yours; --all --all-users everyone's)"]
    assert [state.lease_status(i)[0] for i in ids] == ["active", "active"]


def test_leases_are_released_once_the_interpreter_is_shutting_down(fleet_home, gate, monkeypatch):
    """A library caller's run in a worker thread whose main thread ended: the release pool took no
    more work ("cannot schedule new futures after interpreter shutdown") and the leases stayed up,
    billed. They are released all the same, still side by side."""
    import concurrent.futures.thread as executor_thread
    state = open_state()
    ids = _leases(state, 3)
    gate(3)
    monkeypatch.setattr(executor_thread, "_shutdown", True)   # what interpreter shutdown sets
    assert set(ids) <= set(leases.down(ids, state=state))
    assert [state.lease_status(i)[0] for i in ids] == ["released"] * 3
