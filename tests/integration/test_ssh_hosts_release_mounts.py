"""A run on a team host whose login is root binds a host directory into its machine's working
directory: the release's `rm -rf` went through the bind and deleted that directory's files, which
are not fleet's. The release now detaches what the run mounted first."""
from __future__ import annotations

import os
import subprocess

import pytest

from fleet.ids import new_lease_id
from fleet.remote.mounts import mounts_under
from tests.conftest import processes_under
from tests.fixtures.ssh_hosts import HostFarm
from tests.integration.test_ssh_hosts import plan_for, provider_for

pytestmark = [pytest.mark.timeout(180), pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")]


def test_release_detaches_a_bind_mount_the_run_left_and_deletes_nothing_through_it(tmp_path, monkeypatch):
    host_data = tmp_path / "host-data"
    host_data.mkdir()
    (host_data / "keep.txt").write_text("not fleet's\n")
    farm = HostFarm(tmp_path / "farm")
    farm.start("h0")
    monkeypatch.setenv("HOME", str(farm.home))
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "fleet-home"))
    monkeypatch.delenv("FLEET_STATE_URL", raising=False)
    try:
        provider = provider_for(farm)
        lease = provider.lease(plan_for(provider, 1), new_lease_id(), 120)
        bound = os.path.join(lease.machines[0].workdir, "outputs", "bound")
        os.makedirs(bound)
        subprocess.run(["mount", "--bind", str(host_data), bound], check=True, timeout=30)
        provider.release(lease)
        assert (host_data / "keep.txt").read_text() == "not fleet's\n"
        assert mounts_under(farm.base) == [] and not os.path.exists(lease.machines[0].workdir)
    finally:
        for point in mounts_under(farm.base):
            subprocess.run(["umount", "-l", point], timeout=30)
        farm.stop()
    assert not processes_under(farm.base / "hosts")
