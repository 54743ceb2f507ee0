"""`fleet status` (fleet/lease_status.py): a provider that describes leases remotely and declares an
observed_state_ttl_s is asked once, its answer remembered in the state and shown, with its age,
until it is stale or a deadline passed since it was given (orphans need a new answer); --refresh asks
now; --fast asks nothing. The views match what `fleet status` always showed, key for key."""
from __future__ import annotations

from datetime import timedelta

import pytest

from fleet import leases
from fleet.ids import new_lease_id
from fleet.lease_status import remembered_note, status
from fleet.models import MachineState, utcnow
from fleet.plan import make_plan
from fleet.providers import registry
from fleet.providers.base import DescribesLeases
from fleet.providers.fake import FakeProvider
from fleet.state import open_state


class _Remote(FakeProvider, DescribesLeases):
    """The fake provider as a remote, batched describer: counts its calls; `says` is its answer."""

    observed_state_ttl_s = 60.0
    calls = 0
    says = "running"

    def describe_leases(self, leases_):
        type(self).calls += 1
        return {lease.id: [MachineState(m.id, self.says) for m in lease.machines] for lease in leases_}


@pytest.fixture(params=["sqlite", "postgresql"])
def remote(request, fleet_home, monkeypatch):
    """Three leases of the remote fake, one run each, on either store."""
    if request.param == "postgresql":
        monkeypatch.setenv("FLEET_STATE_URL", request.getfixturevalue("postgres_url"))
    _Remote.calls, _Remote.says = 0, "running"
    monkeypatch.setattr(leases, "_provider", lambda name: _Remote())
    real = registry.provider_class
    monkeypatch.setattr(registry, "provider_class", lambda name: _Remote if name == "fake" else real(name))
    state = open_state()
    provider = FakeProvider()
    ids = []
    for _ in range(3):
        plan = make_plan(provider="fake", template=next(iter(provider.templates().values())), gpus=None,
                         max_duration_s=3600, heartbeat_ttl_s=600, project="p", user="tester")
        lease = provider.lease(plan, new_lease_id(), 600)
        state.save_lease(lease)
        state.create_run(f"r-{lease.id}", lease_id=lease.id, project="p", user="tester", command="true",
                         log_path="/nonexistent", output_dir="/nonexistent", meta={"detached": True})
        ids.append(lease.id)
    yield state, ids
    state.close()


def _states(views):
    return {m["state"] for v in views for m in v["machines"]}


def test_one_answer_serves_every_status_until_it_is_stale(remote):
    state, ids = remote
    assert _states(status(state)) == {"running"} and _Remote.calls == 1
    _Remote.says = "gone"                             # EC2 ended them; the remembered answer stands
    views = status(state)
    assert _states(views) == {"running"} and _Remote.calls == 1
    assert {v["health"] for v in views} == {"up"}
    assert all(m["observed_at"] for v in views for m in v["machines"])
    # --refresh asks now, and what it hears is remembered in turn.
    assert _states(status(state, refresh=True)) == {"gone"} and _Remote.calls == 2
    assert {v["health"] for v in status(state)} == {"gone"} and _Remote.calls == 2
    # Once stale, the next status asks.
    state.db.execute("UPDATE machine_observations SET fresh_until = ?", ((utcnow() - timedelta(seconds=1)).isoformat(),))
    _Remote.says = "running"
    assert _states(status(state)) == {"running"} and _Remote.calls == 3


def test_a_deadline_passed_since_the_answer_needs_a_new_one(remote):
    """A remembered "running" from before the deadline cannot tell an orphan from a machine its
    watchdog ended: status asks again, and shows orphaned only when the provider still says running."""
    state, ids = remote
    status(state)
    past = (utcnow() - timedelta(seconds=5)).isoformat()
    state.db.execute("UPDATE leases SET deadline = ? WHERE id = ?", (past, ids[0]))
    state.db.execute("UPDATE machine_observations SET observed_at = ?",
                     ((utcnow() - timedelta(seconds=30)).isoformat(),))
    views = {v["id"]: v for v in status(state)}
    assert _Remote.calls == 2
    assert views[ids[0]]["health"] == "orphaned" and views[ids[1]]["health"] == "up"
    _Remote.says = "gone"
    assert {v["id"]: v["health"] for v in status(state, refresh=True)}[ids[0]] == "gone"


def test_fast_asks_nothing_and_knows_nothing(remote):
    state, _ = remote
    status(state)
    views = status(state, check=False)
    assert _Remote.calls == 1 and _states(views) == {"unknown"}


def test_view_keeps_every_key_status_showed(remote):
    state, ids = remote
    view = next(v for v in status(state) if v["id"] == ids[0])
    assert set(view) == {"id", "provider", "template", "project", "user", "status", "health", "gpus", "created_at",
                         "deadline", "max_deadline", "keep_until", "machines", "runs"}
    assert view["runs"] == [{"id": f"r-{ids[0]}", "status": "running", "exit_code": None, "detached": True}]
    lease = state.get_lease(ids[0])
    assert view["gpus"] == lease.gpus and view["user"] == "tester" and view["provider"] == "fake"
    machine = view["machines"][0]
    m = lease.machines[0]
    assert machine["address"] == m.address and machine["gpus"] == list(m.gpu_slots)
    assert machine["price_per_hour"] == str(m.price_per_hour) and machine["rank"] == m.node_rank
    # leases.lease_view (Lease objects) gives the same view.
    old = leases.lease_view(lease, [MachineState(x.id, "running") for x in lease.machines])

    def plain(v):
        return {**v, "runs": [], "machines": [{**x, "observed_at": None} for x in v["machines"]]}
    assert plain(old) == plain(view)


def test_the_note_says_how_old_the_remembered_states_are(remote):
    state, _ = remote
    status(state)
    state.db.execute("UPDATE machine_observations SET observed_at = ?",
                     ((utcnow() - timedelta(seconds=75)).isoformat(),))
    note = remembered_note(status(state))
    assert note is not None and "1m15s ago" in note and "--refresh" in note


def test_no_note_for_states_read_now(remote):
    state, _ = remote
    assert remembered_note(status(state, refresh=True)) is None


def test_a_state_it_cannot_write_still_gets_its_status(remote, monkeypatch):
    """Remembering is a convenience: a store that refuses the write (read-only, locked) still lists
    every lease with what the provider said, and the next status asks again."""
    state, ids = remote

    def refuse(rows):
        raise PermissionError("read-only database")
    monkeypatch.setattr(state, "save_observations", refuse)
    assert _states(status(state)) == {"running"} and len(status(state)) == len(ids)
    assert _Remote.calls == 2
