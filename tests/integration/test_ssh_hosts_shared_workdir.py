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
from tests.fixtures.ssh_hosts import farm_as_home
from tests.integration.test_ssh_hosts import plan_for, provider_for

NOBODY = 65534


@pytest.fixture
def farm(tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("needs root to give a directory to another user")
    with farm_as_home(tmp_path, monkeypatch, "shared") as farm:
        yield farm
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
    assert not any(not p.name.startswith(".pyenv-cache-") for p in leases.iterdir()), list(leases.iterdir())


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


def _plant_helper(cache, marker) -> None:
    """Another user's chunk cache with a compiled helper of theirs: right hashes, their code first."""
    import hashlib
    import marshal
    import subprocess

    from fleet.snapshots.sync_remote import helper_hash, helper_source
    from tests.fixtures.ssh_hosts import PYTHON
    (cache / "helper").mkdir(parents=True)
    for d in (cache, cache / "helper"):
        os.chmod(d, 0o777)
        os.chown(d, NOBODY, NOBODY)
    tag = subprocess.run([PYTHON, "-c", "import sys; print(sys.implementation.cache_tag)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    evil = f"open({str(marker)!r}, 'w').write('ran')\n".encode() + helper_source()
    code = marshal.dumps(compile(evil, "helper", "exec"))
    planted = cache / "helper" / f"{helper_hash()}.py.{tag}.code"
    planted.write_bytes(helper_hash().encode() + hashlib.sha256(code).hexdigest().encode() + code)
    os.chown(planted, NOBODY, NOBODY)


def _sticky_workdir_and_snapshot(farm, tmp_path, monkeypatch, text: str):
    """The first host's workdir shared and sticky (root's, as accepted), and a one-file snapshot."""
    import fleet.snapshots.sync_remote as sync_remote
    from fleet.snapshots import create_snapshot, open_store
    monkeypatch.setattr(sync_remote, "on_this_computer_as_us", lambda m: False)   # as a real team host
    leases = farm.hosts[0].leases_dir
    leases.mkdir(parents=True, exist_ok=True)
    os.chmod(leases, 0o1777)
    data = tmp_path / "data"
    data.mkdir()
    (data / "x.txt").write_text(text)
    store = open_store(str(tmp_path / "store"))
    return leases, store, create_snapshot(data, store).id


def test_a_chunk_cache_another_user_made_never_runs_their_code(farm, tmp_path, monkeypatch):
    """The chunk cache is per login in a shared workdir, and the helper kept in it is run only from
    this login's private directories: a planted one fails the sync in one line instead."""
    import fleet.snapshots.sync_remote as sync_remote
    from fleet.snapshots.sync import Target, sync_machine
    leases, store, sid = _sticky_workdir_and_snapshot(farm, tmp_path, monkeypatch, "hello")
    marker = tmp_path / "ran"
    provider = provider_for(farm)
    lease = provider.lease(plan_for(provider, 1), new_lease_id(), 120)
    try:
        m = lease.machines[0]
        cache = sync_remote.host_cache_dir(m)
        assert cache.endswith(f"/.chunk-cache-{m.user}")
        _plant_helper(leases / ".chunk-cache", marker)          # the name every login shared before
        _plant_helper(leases / f".chunk-cache-{m.user}", marker)  # and this login's, made first by them
        with pytest.raises(Exception, match="is not this user's own directory"):
            sync_machine(m, store, [Target(dest=f"{m.workdir}/data/train", ids=[sid], read_only=True)])
        assert not marker.exists(), "another user's code ran as this login"
    finally:
        provider.release(lease)


def test_teammates_logging_in_as_themselves_each_get_their_own_home(tmp_path, monkeypatch):
    """A `[[hosts]]` entry without `user` is reached by each teammate's own login: the home one
    teammate's probe learnt went into the shared hosts row, and the other's lease within 30 s was
    put under it (`unsafe workdir, uid … owns …/.fleet-leases`)."""
    import shutil
    import subprocess
    import tempfile
    from dataclasses import replace
    from pathlib import Path

    from fleet.config.model import Config
    from fleet.providers.ssh import SSHHostsProvider
    from fleet.providers.ssh.settings import SSHSettings
    from fleet.state import open_state
    from tests.e2e.test_aws_sandbox import separate_login, separate_login_name
    from tests.fixtures.ssh_hosts import started_farm
    if os.geteuid() != 0:
        pytest.skip("needs root to make a second login")
    base = Path(tempfile.mkdtemp(prefix="fleet-homes-"))
    os.chmod(base, 0o711)
    me = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()

    def provider(farm, login):
        (h,) = farm.configs(gpus=4)
        config = Config(path=None, base_dir=farm.base, project="p", name="p", command="true", provider="ssh",
                        template="hosts", python="/usr/bin/python3",
                        provider_settings={"ssh": SSHSettings(hosts=[replace(h, workdir=None, user=login)])})
        return SSHHostsProvider(config=config, state=open_state())
    try:
        with separate_login(separate_login_name()) as login, started_farm(base, ("h0",), login=login) as farm:
            monkeypatch.setenv("HOME", str(farm.home))
            monkeypatch.setenv("FLEET_HOME", str(tmp_path / "alice-home"))
            alice = provider(farm, login)
            a = alice.lease(plan_for(alice, 1), new_lease_id(), 120)
            try:
                monkeypatch.setenv("FLEET_HOME", str(tmp_path / "bob-home"))
                monkeypatch.setenv("FLEET_STATE_URL", f"sqlite:///{tmp_path / 'alice-home' / 'state.db'}")
                bob = provider(farm, me)       # the same hosts table, his own login
                b = bob.lease(plan_for(bob, 1, user="bob"), new_lease_id(), 120)
                try:
                    assert Path(b.machines[0].workdir).parents[1] != Path(a.machines[0].workdir).parents[1]
                finally:
                    bob.release(b)
            finally:
                alice.release(a)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_chunk_cache_link_another_user_planted_is_not_followed(farm, tmp_path, monkeypatch):
    """In a sticky shared workdir another user can make `.chunk-cache-<login>` before this login's
    first sync: a link to a directory of this login's that others may read (a 0755 home). Followed,
    the cache's fan-out directories and chunks (0755, 0444) were written there, the data readable by
    that user. The link is refused in one line and nothing is written where it leads."""
    from fleet.snapshots.sync import Target, sync_machine
    leases, store, sid = _sticky_workdir_and_snapshot(farm, tmp_path, monkeypatch, "secret")
    home = tmp_path / "victim-home"               # this login's own, readable by all
    home.mkdir()
    os.chmod(home, 0o755)
    provider = provider_for(farm)
    lease = provider.lease(plan_for(provider, 1), new_lease_id(), 120)
    try:
        m = lease.machines[0]
        link = leases / f".chunk-cache-{m.user}"
        os.symlink(home, link)
        os.lchown(link, NOBODY, NOBODY)             # planted by the other user
        with pytest.raises(Exception, match="a link another user made"):
            sync_machine(m, store, [Target(dest=f"{m.workdir}/data/train", ids=[sid], read_only=True)])
        assert list(home.iterdir()) == []
    finally:
        provider.release(lease)
