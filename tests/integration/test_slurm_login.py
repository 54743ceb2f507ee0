"""provider = "slurm" with `[slurm] login` and `jump`: every Slurm command (sbatch, squeue, srun for
the node steps, scancel) runs on a login node over SSH, reached through a jump host. Both are real
sshd processes on loopback (tests/fixtures/ssh_hosts.py) in front of the real test cluster.
"""
from __future__ import annotations

import subprocess

import pytest

from tests.fixtures.slurm import wait_for
from tests.fixtures.ssh_hosts import HostFarm

from fleet.ids import new_lease_id
from fleet.plan import make_plan
from fleet.providers.base import choose_mix
from fleet.providers.slurm import errors as E
from fleet.providers.slurm.commands import LocalRunner, SlurmCommands, SSHRunner
from fleet.providers.slurm.provider import SlurmProvider, login_runner, tag
from fleet.providers.slurm.settings import SlurmSettings

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def farm(tmp_path):
    farm = HostFarm(tmp_path / "farm")
    yield farm
    farm.stop()


def test_lease_runs_every_slurm_command_on_the_login_node_through_the_jump_host(slurm_env, fleet_home, farm,
                                                                              tmp_path):
    import getpass
    login, jump = farm.start("login"), farm.start("jump")
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    user = getpass.getuser()
    settings = SlurmSettings(login=f"{user}@127.0.0.1", login_port=login.port, identity=str(farm.key),
                             known_hosts=str(farm.home / ".ssh" / "known_hosts"), jump=f"{user}@127.0.0.1:{jump.port}",
                             workdir=str(nodes), poll_s=0.5)
    # login_runner is what [slurm] login/jump build; the cluster's SLURM_CONF rides along (a real
    # login node has its own slurm.conf).
    runner = login_runner(settings, env=slurm_env.env)
    assert isinstance(runner, SSHRunner) and any(o.startswith("ProxyCommand=") for o in runner.base)
    provider = SlurmProvider(settings, runner=runner)
    plan = make_plan(provider="slurm", mix=choose_mix(provider, "slurm-1gpu", 2), max_duration_s=600,
                     heartbeat_ttl_s=120, project="slurm-test", user="tester")
    lease = provider.lease(plan, new_lease_id(), 120)
    here = SlurmCommands(LocalRunner(slurm_env.env))
    try:
        assert lease.meta["slurm_jump"] == settings.jump and lease.meta["slurm_login"] == settings.login
        [job] = [j for j in here.queue() if j.comment == tag(lease.id)]
        assert job.node_count == 2 and job.gpus == 2
        from fleet.remote.ssh import connect
        for m in lease.machines:
            with connect(m, timeout=30) as s:
                assert s.run("echo $FLEET_MACHINE_ID").stdout.strip() == m.id
        assert {s.state for s in provider.describe(lease)} == {"running"}
        # Granted at once by salloc (the nodes are free); the node steps' srun each run over their own ssh.
        assert provider.slurm.calls["salloc"] == 1 and provider.slurm.calls["sbatch"] == 0
        assert provider.slurm.calls["srun"] == 0
    finally:
        provider.release(lease)
    wait_for(lambda: all(j.state.finished for j in here.queue() if j.comment == tag(lease.id)), 60,
             "the allocation to end")
    # Slurm's short commands shared one SSH connection (ssh's ControlMaster): one login, not one each.
    check = subprocess.run(runner.base + runner.mux + ["-O", "check", runner.destination], capture_output=True,
                           text=True, timeout=30)
    assert runner.mux and check.returncode == 0 and "Master running" in check.stderr, check.stderr
    jump.kill_sshd()          # the only way to the login node is gone: one line naming the login node
    runner.disconnect()       # (the connection already made would outlive it)
    with pytest.raises(E.LoginNodeUnreachable) as err:
        provider.describe(lease)
    assert f"login node {settings.login} did not answer" in err.value.one_line()
