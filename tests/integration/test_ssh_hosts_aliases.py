"""One team host under two names (a teammate's fleet.toml names it, another's does not; one entry
repeated): each name held its own GPU slots, and two 4-GPU leases both got slots 0-3 of one 4-GPU
machine. A lease is now refused, in one line, while two usable names are one machine."""
from __future__ import annotations

from dataclasses import replace

import pytest

from fleet.config.model import Config
from fleet.errors import UsageError
from fleet.ids import new_lease_id
from fleet.providers.ssh import SSHHostsProvider
from fleet.providers.ssh.settings import SSHSettings
from fleet.providers.ssh.slots import active
from fleet.state import open_state
from tests.fixtures.ssh_hosts import PYTHON, farm_as_home
from tests.integration.test_ssh_hosts import plan_for


@pytest.fixture
def farm(tmp_path, monkeypatch):
    with farm_as_home(tmp_path, monkeypatch, "h0") as farm:
        yield farm


def _provider(farm, hosts) -> SSHHostsProvider:
    config = Config(path=None, base_dir=farm.base, project="p", name="p", command="true", provider="ssh",
                    template="hosts", python=PYTHON, provider_settings={"ssh": SSHSettings(hosts=hosts)})
    return SSHHostsProvider(config=config, state=open_state())


def test_a_teammate_naming_the_same_machine_otherwise_gets_a_refusal_not_its_busy_gpus(farm):
    (h,) = farm.configs(gpus=4)
    alice = _provider(farm, [h])
    bob = _provider(farm, [replace(h, name=None)])          # his checkout: no name, so its address
    first = alice.lease(plan_for(alice, 4), new_lease_id(), 120)
    try:
        with pytest.raises(UsageError) as refused:
            bob.lease(plan_for(bob, 4, user="bob"), new_lease_id(), 120)
        assert "are one machine (the same address" in str(refused.value)
        assert "nothing was leased" in str(refused.value)
        assert len(active(open_state().db)) == 4               # alice's four slots, no more
    finally:
        alice.release(first)


def test_one_fleet_toml_with_one_machine_twice_is_refused(farm):
    (h,) = farm.configs(gpus=4)
    twice = _provider(farm, [h, replace(h, name="again")])
    with pytest.raises(UsageError, match=r"hosts 'again' and 'h0' are one machine"):
        twice.lease(plan_for(twice, 4), new_lease_id(), 120)
    assert active(open_state().db) == []
