"""Releasing a detached team-host run's lease from node 0 (fleet/providers/ssh/handoff.py): the
supervisor reaches the machines with the lease's own key, and the release revokes that key. Two
machines of the lease on one host login share its authorized_keys: the key must still let the
release in to stop the second machine after the first one is stopped, whatever their order."""
from __future__ import annotations

from dataclasses import replace

import pytest

from fleet.ids import new_lease_id
from fleet.providers.ssh import provider as ssh_provider
from tests.conftest import processes_under
from tests.fixtures.ssh_hosts import HostFarm
from tests.integration.test_ssh_hosts import plan_for, provider_for


class _Events:
    def phase(self, *_a) -> None:
        pass


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    farm = HostFarm(tmp_path_factory.mktemp("ssh-lease-key"))
    farm.start("h0", login_keys=True)
    yield farm
    farm.stop()
    assert not processes_under(farm.base / "hosts"), processes_under(farm.base / "hosts")


def test_a_release_with_the_lease_key_stops_every_machine_of_a_login_before_revoking(farm, tmp_path, monkeypatch):
    from fleet.providers.ssh.handoff import SSHHandoff, key_tag
    monkeypatch.setenv("HOME", str(farm.home))
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "fleet-home"))
    monkeypatch.delenv("FLEET_STATE_URL", raising=False)
    provider = provider_for(farm)
    pool_map = ssh_provider._pool_map
    lease = provider.lease(plan_for(provider, 2, template="hosts-1gpu"), new_lease_id(), 120)
    try:
        assert len({m.provider_ref["host"] for m in lease.machines}) == 1 and len(lease.machines) == 2
        key = tmp_path / "lease_key"
        key.write_bytes(SSHHandoff().lease_key(lease, lease.machines[0], _Events()))
        key.chmod(0o600)
        assert key_tag(lease.id) in farm.hosts[0].login_keys.read_text()
        on_node0 = replace(lease, machines=[replace(m, key_path=str(key)) for m in lease.machines])
        # One machine after the other (as a pool of workers busy elsewhere would do them)
        monkeypatch.setattr(ssh_provider, "_pool_map", lambda fn, items: [fn(item) for item in items])
        provider.release(on_node0)
        left = [p.name for p in farm.hosts[0].leases_dir.glob(f"{lease.id}/*")]
        status = [h.status for h in provider.inventory().list()]
    finally:
        monkeypatch.setattr(ssh_provider, "_pool_map", pool_map)
        provider.release(lease)    # with the farm's own key: whatever is left
    assert left == [] and status == ["up"], (left, status)
    assert key_tag(lease.id) not in farm.hosts[0].login_keys.read_text()
