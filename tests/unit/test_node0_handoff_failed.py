"""`fleet up -d` supervised from node 0 (fleet/run/node_launch.py) whose handoff fails after the
lease exists: the machines are released as `fleet down` releases them, so every machine's time up
to the release is on the ledger, once, and the user sees the handoff's error in one line. The
fake provider stands in for AWS; only the handoff itself (SSH to node 0) is stood in for."""
from __future__ import annotations

import time
from decimal import Decimal

import pytest

from fleet.config.model import Config
from fleet.errors import InfrastructureError
from fleet.ids import new_run_id
from fleet.money.budget import Price
from fleet.money.ledger import Ledger
from fleet.providers.fake import FakeProvider, FakeSettings
from fleet.run import node_launch
from fleet.run.supervisor import SupervisorSpec
from fleet.run.types import PinnedInputs, RunOptions
from fleet.state import open_state

HELD_S = 1.0   # how long the machines live before the handoff fails


class Node0Fake(FakeProvider):
    def node0_handoff(self):
        return object()   # what the stood-in handoff is given; never read


class Warnings:
    def __init__(self):
        self.lines: list[str] = []

    def phase(self, name, detail=""):
        pass

    def log(self, *args, **kwargs):
        pass

    def warn(self, message):
        self.lines.append(message)


@pytest.mark.parametrize("supervisor_opened_segments", [False, True])
def test_a_failed_handoff_releases_the_lease_and_bills_every_machine_once(fleet_home, tmp_path, monkeypatch,
                                                                           supervisor_opened_segments):
    provider = Node0Fake(FakeSettings(price_per_hour=Decimal(36)))   # $0.01/s per machine
    monkeypatch.setattr("fleet.run.offer.provider_for", lambda config: provider)

    def handoff_fails(config, spec, pins, lease, state, events, provider, handoff):
        if supervisor_opened_segments:   # node 0's supervisor got as far as its budget stage
            ledger = Ledger(state.db)
            for m in lease.machines:
                ledger.open_segment(lease=lease, machine=m, price=Price(36_000_000, "test", False),
                                    run_id=spec.run_id, at=lease.created_at)
        time.sleep(HELD_S)
        raise InfrastructureError("the supervisor did not start on node 0: no answer")
    monkeypatch.setattr(node_launch, "_start_and_follow", handoff_fails)

    config = Config(path=None, base_dir=tmp_path, project="p", name="n", command="train", provider="fake",
                    template="fake-4gpu", gpus=8, max_duration_s=600, heartbeat_ttl_s=60)
    spec = SupervisorSpec(run_id=new_run_id(), cwd=str(tmp_path))
    events = Warnings()
    with pytest.raises(InfrastructureError) as raised:
        node_launch.launch_on_node0(config, spec, RunOptions(detached=True), events, pins=PinnedInputs())
    assert raised.value.one_line().startswith("the supervisor did not start on node 0"), raised.value.one_line()
    assert "\n" not in raised.value.one_line()

    state = open_state()
    try:
        [lease] = state.list_leases(active_only=False)
        assert lease.status == "released" and len(lease.machines) == 2
        assert [s.state for s in provider.describe(lease)] == ["gone", "gone"]
        rows = Ledger(state.db).read(lease_id=lease.id).entries
        assert Ledger(state.db).open_segments(lease.id) == []
    finally:
        state.close()
    for m in lease.machines:
        mine = [r for r in rows if r.machine_id == m.id]
        assert sorted(r.kind for r in mine) == ["close", "open"], mine   # one segment, closed once
        held = sum(r.duration_ms for r in mine) / 1000
        assert HELD_S <= held < HELD_S + 30, held
        assert sum(r.cost_micro for r in mine) >= int(HELD_S * 10_000)   # $0.01 a second
    # What the user is told of the release: the machines it billed that had no segment, nothing failed.
    billed = [] if supervisor_opened_segments else ["billed 2 machine(s) that had no cost segment"]
    assert [b for b in billed if any(b in line for line in events.lines)] == billed, events.lines
    assert len(events.lines) == len(billed), events.lines
