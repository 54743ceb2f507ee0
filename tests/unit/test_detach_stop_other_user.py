"""`fleet down` on a lease whose detached run is supervised by another Unix user's process (a shared
state database): the supervisor cannot be signalled, and that is one clear line naming the run and
the owner, never a PermissionError traceback; the lease is left to its owner."""
from __future__ import annotations

import os

import pytest

from fleet import leases
from fleet.errors import InfrastructureError
from fleet.ids import new_lease_id
from fleet.plan import make_plan
from fleet.providers.fake import FakeProvider
from fleet.run import detach
from fleet.state import open_state


class _Warnings:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def phase(self, name: str, detail: str = "") -> None:
        pass

    def log(self, label: str, stream: str, line: str) -> None:
        pass

    def warn(self, message: str) -> None:
        self.lines.append(message)


def _lease_with_detached_run(state) -> tuple[str, str]:
    provider = FakeProvider()
    plan = make_plan(provider="fake", template=next(iter(provider.templates().values())), gpus=None,
                     max_duration_s=600, heartbeat_ttl_s=300, project="p", user="tester")
    lease = provider.lease(plan, new_lease_id(), 300)
    state.save_lease(lease)
    state.create_run("r-otheruser1", lease_id=lease.id, project="p", user="tester", command="train",
                     log_path="", output_dir="", meta={"detached": True})
    return lease.id, "r-otheruser1"


@pytest.fixture
def foreign_supervisor(monkeypatch):
    """The run's supervisor proved alive, but owned by someone else: signalling it is refused."""
    sent = []

    def kill(ident, run_id):
        sent.append((ident["pid"], run_id))
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(detach, "is_supervisor", lambda ident, run_id: True)
    monkeypatch.setattr(detach, "_send_term", kill)
    return sent


def test_stopping_another_users_supervisor_is_one_clear_error(fleet_home, foreign_supervisor):
    state = open_state()
    lease_id, run_id = _lease_with_detached_run(state)
    with pytest.raises(InfrastructureError) as caught:
        detach.stop_supervised_runs(state, lease_id, _Warnings(), wait_s=1)
    line = caught.value.one_line()
    assert "\n" not in line
    assert f"run {run_id} is supervised by another user's process" in line
    assert f"uid {os.getuid()}" in line           # /proc/<pid> of the recorded pid (this test's own)
    assert f"fleet down {lease_id}" in line
    assert foreign_supervisor, "the supervisor was asked first"


def test_fleet_down_names_the_run_and_leaves_the_lease_to_its_owner(fleet_home, foreign_supervisor):
    state = open_state()
    lease_id, run_id = _lease_with_detached_run(state)
    events = _Warnings()
    with pytest.raises(InfrastructureError, match=lease_id):
        leases.down([lease_id], state=state, events=events)
    assert any(run_id in w and "another user's process" in w for w in events.lines), events.lines
    assert state.lease_status(lease_id)[0] == "active"
