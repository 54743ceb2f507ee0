"""A team host's `workdir` shared by its users (/scratch/fleet): another user must not be able to
put a directory of their own where fleet copies and runs its agent (a release would run their
agent.py as this login), nor plant an entry in the host's venv cache. fleet refuses such a
workdir with one line, before anything of the lease runs there."""
from __future__ import annotations

import os

import pytest

from fleet.errors import InfrastructureError
from fleet.ids import new_lease_id
from tests.conftest import processes_under
from tests.fixtures.ssh_hosts import HostFarm
from tests.integration.test_ssh_hosts import plan_for, provider_for

NOBODY = 65534


@pytest.fixture
def farm(tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("needs root to give a directory to another user")
    farm = HostFarm(tmp_path / "farm")
    farm.start("shared")
    monkeypatch.setenv("HOME", str(farm.home))
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "fleet-home"))
    monkeypatch.delenv("FLEET_STATE_URL", raising=False)
    yield farm
    farm.stop()
    assert not processes_under(farm.base / "hosts")


def _lease_fails(farm) -> str:
    provider = provider_for(farm)
    with pytest.raises(InfrastructureError) as err:
        lease = provider.lease(plan_for(provider, 1), new_lease_id(), 120)
        provider.release(lease)
    return str(err.value)


def test_a_workdir_another_user_made_is_refused(farm):
    leases = farm.hosts[0].leases_dir
    leases.mkdir(parents=True, exist_ok=True)
    os.chown(leases, NOBODY, NOBODY)
    os.chmod(leases, 0o1777)                 # made first by someone else, open to all: theirs to swap
    message = _lease_fails(farm)
    assert f"fleet: unsafe workdir, uid {NOBODY} owns" in message, message
    assert not any(p.name != ".pyenv-cache" for p in leases.iterdir()), list(leases.iterdir())


def test_a_lease_directory_planted_in_a_shared_sticky_workdir_is_refused(farm, monkeypatch):
    """A sticky world-writable workdir (root's /scratch/fleet, mode 1777) is fine; a directory
    another user made there under the name of the lease to come is not."""
    leases = farm.hosts[0].leases_dir
    leases.mkdir(parents=True, exist_ok=True)
    os.chmod(leases, 0o1777)
    lease_id = new_lease_id()
    planted = leases / lease_id
    planted.mkdir()
    os.chown(planted, NOBODY, NOBODY)
    provider = provider_for(farm)
    with pytest.raises(InfrastructureError) as err:
        provider.lease(plan_for(provider, 1), lease_id, 120)
    assert f"fleet: unsafe workdir, a directory not this lease's own (uid {NOBODY}" in str(err.value), str(err.value)
    assert list(planted.iterdir()) == []          # nothing of fleet's written into the planted directory


def test_the_venv_cache_planted_by_another_user_is_refused(tmp_path):
    from fleet.remote.pyenv_remote import _own_private_dir
    cache = tmp_path / ".pyenv-cache"
    cache.mkdir(mode=0o777)
    os.chmod(cache, 0o777)
    with pytest.raises(SystemExit, match="not this user's private directory"):
        _own_private_dir(str(cache))
    os.chmod(cache, 0o700)
    _own_private_dir(str(cache))                  # this user's own, private: used
