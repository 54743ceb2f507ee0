"""`fleet status --fast` asks no provider: machines nobody was asked about are "unchecked", not
"gone" (it showed live kept leases as gone, 0/1)."""
from __future__ import annotations

import json

from fleet.ids import new_lease_id
from fleet.leases import lease_view
from fleet.models import MachineState
from fleet.plan import make_plan
from fleet.providers.fake import FakeProvider
from fleet.state import open_state
from tests.conftest import run_fleet


def _lease():
    provider = FakeProvider()
    plan = make_plan(provider="fake", template=next(iter(provider.templates().values())), gpus=None,
                     max_duration_s=600, heartbeat_ttl_s=300, project="p", user="tester")
    return provider.lease(plan, new_lease_id(), 300)


def test_machines_nobody_asked_about_are_unchecked_not_gone():
    lease = _lease()
    assert lease_view(lease, None)["health"] == "unchecked"
    assert lease_view(lease, [MachineState(m.id, "gone") for m in lease.machines])["health"] == "gone"
    assert lease_view(lease, [MachineState(m.id, "running") for m in lease.machines])["health"] == "up"


def test_status_fast_says_unchecked(fleet_home, tmp_path):
    state = open_state()
    state.save_lease(_lease())
    listing = run_fleet(["status", "--fast", "--json"], cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert [v["health"] for v in json.loads(listing.stdout)["leases"]] == ["unchecked"]
    table = run_fleet(["status", "--fast"], cwd=tmp_path)
    assert " unchecked " in table.stdout and " gone " not in table.stdout
