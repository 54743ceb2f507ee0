"""On a team host (the ssh provider), a lease's processes end with it however they daemonised, and
each machine says which isolation the host gave it (issue 13)."""
from __future__ import annotations

import json
import os
import uuid

import pytest

from fleet.ids import new_lease_id
from fleet.remote.agent.containment import cgroup2_mount
from fleet.remote.ssh import connect
from tests.conftest import wait_until
from tests.e2e.test_process_ownership import _marked
from tests.integration.test_ssh_hosts import env, farm, plan_for, provider_for  # noqa: F401 — fixtures

ROOT_WITH_CGROUP = bool(cgroup2_mount()) and os.geteuid() == 0


def _start_escaping(m, marker: str) -> None:
    """Through the agent's exec, as fleet runs every command: setsid, no tag, double fork."""
    inner = f"exec -a {marker} sleep 900"
    script = f"env -u FLEET_MACHINE_ID setsid sh -c '(bash -c \"{inner}\" &) &'"
    with connect(m) as s:
        s.run(f"FLEET_MACHINE_ID={m.id} {m.python} {m.agent_path} exec -- sh -c {json.dumps(script)}",
              cwd=m.workdir, timeout=60)
    assert wait_until(lambda: _marked(marker), 30), "the escaping process never started"


@pytest.mark.skipif(not ROOT_WITH_CGROUP, reason="the test hosts give cgroups only to root")
@pytest.mark.parametrize("end", ["release", "deadline"])
def test_an_escaping_process_on_a_team_host_ends_with_its_machine(farm, env, end):  # noqa: F811
    provider = provider_for(farm, hosts=farm.hosts[:1])
    lease = provider.lease(plan_for(provider, 1), new_lease_id(), 4 if end == "deadline" else 120)
    marker = f"fleet-escape-{uuid.uuid4().hex[:8]}"
    try:
        (m,) = lease.machines
        assert m.provider_ref["isolation"] == "cgroup"      # root on the host: a unit of its own
        _start_escaping(m, marker)
        if end == "release":
            provider.release(lease)
            assert not _marked(marker), "outlived the release"
        else:   # nobody releases: the watchdog on the host ends it at the deadline
            assert wait_until(lambda: not _marked(marker), 60), "outlived the deadline"
            assert [s.state for s in provider.describe(lease)] == ["gone"]
    finally:
        provider.release(lease)
    assert _marked(marker) == []


def test_verified_pids_on_a_team_host_end_tagged_processes_and_say_so(farm, env, monkeypatch):  # noqa: F811
    monkeypatch.setenv("FLEET_ISOLATION", "pids")   # a host without cgroup delegation
    provider = provider_for(farm, hosts=farm.hosts[:1])
    lease = provider.lease(plan_for(provider, 1), new_lease_id(), 120)
    marker = f"fleet-tagged-{uuid.uuid4().hex[:8]}"
    try:
        (m,) = lease.machines
        assert m.provider_ref["isolation"] == "pids"
        with connect(m) as s:
            status = json.loads(s.run([m.python, m.agent_path, "status", "--state-dir", m.state_dir]).stdout)
            assert status["isolation"] == "pids"
            s.run(f"FLEET_MACHINE_ID={m.id} setsid bash -c 'exec -a {marker} sleep 900' </dev/null >/dev/null 2>&1 &")
        assert wait_until(lambda: _marked(marker), 30)
        provider.release(lease)
        assert _marked(marker) == [], "a tagged process outlived the release"
    finally:
        provider.release(lease)


@pytest.mark.skipif(not ROOT_WITH_CGROUP, reason="the test hosts give cgroups only to root")
def test_hosts_ls_says_which_isolation_each_host_gives(farm, tmp_path):  # noqa: F811
    from tests.conftest import run_fleet
    from tests.fixtures.ssh_hosts import toml_hosts
    (tmp_path / "fleet.toml").write_text('project = "p"\ncommand = "true"\nprovider = "ssh"\n'
                                         + toml_hosts(farm.configs(farm.hosts[:1])))
    env = {"HOME": str(farm.home), "FLEET_HOME": str(tmp_path / "fleet-home"), "FLEET_STATE_URL": ""}
    listed = json.loads(run_fleet(["hosts", "ls", "--json"], cwd=tmp_path, env=env).stdout)["hosts"]
    assert [(h["name"], h["isolation"]) for h in listed] == [(farm.hosts[0].name, "cgroup")]
    table = run_fleet(["hosts", "ls"], cwd=tmp_path, env=env).stdout
    assert "isolation" in table and "cgroup" in table
    unprobed = json.loads(run_fleet(["hosts", "ls", "--json", "--no-probe"], cwd=tmp_path, env=env).stdout)
    assert unprobed["hosts"][0]["isolation"] is None
