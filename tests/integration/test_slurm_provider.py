"""provider = "slurm" against the real test cluster (tests/fixtures/slurm.py): slurmctld, two slurmd
with 2 GPUs (GRES) each, slurmdbd. Leases are allocations; each node becomes a Machine reached over
SSH (a user-level sshd started as a job step); release is scancel.
"""
from __future__ import annotations

import os
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from tests.fixtures.slurm import wait_for

from fleet.errors import Cancelled
from fleet.ids import new_lease_id
from fleet.plan import make_plan
from fleet.providers.base import LeaseWatch, choose_mix
from fleet.providers.slurm import errors as E
from fleet.providers.slurm.commands import LocalRunner, SlurmCommands
from fleet.providers.slurm.provider import SlurmProvider, tag
from fleet.providers.slurm.settings import SlurmSettings

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def node_dir(tmp_path):
    d = tmp_path / "nodes"
    d.mkdir()
    return d


@pytest.fixture
def make(slurm_env, fleet_home, node_dir):
    made: list[tuple[SlurmProvider, object]] = []

    def build(**settings) -> SlurmProvider:
        settings.setdefault("workdir", str(node_dir))
        settings.setdefault("poll_s", 0.5)
        return SlurmProvider(SlurmSettings(**settings))

    yield build


def plan_for(provider: SlurmProvider, template: str, gpus: int, max_s: int = 600):
    return make_plan(provider="slurm", mix=choose_mix(provider, template, gpus), max_duration_s=max_s,
                     heartbeat_ttl_s=120, project="slurm-test", user="tester")


def queued_for(lease_id: str, slurm_env) -> list:
    jobs = SlurmCommands(LocalRunner(slurm_env.env)).queue()
    return [j for j in jobs if j.comment == tag(lease_id) and not j.state.finished]


def ssh_run(machine, command: str) -> str:
    from fleet.remote.ssh import connect
    with connect(machine, timeout=30) as session:
        result = session.run(command)
    assert result.exit_code == 0, result.stderr
    return result.stdout


def test_two_nodes_become_machines_reachable_over_ssh_and_scancel_ends_them(make, slurm_env, node_dir):
    provider = make()
    reported = []
    lease_id = new_lease_id()
    lease = provider.lease(plan_for(provider, "slurm-1gpu", 2), lease_id, 120, on_machine=reported.append)
    try:
        assert sorted(m.id for m in reported) == [f"{lease_id}-n0", f"{lease_id}-n1"]
        assert [m.provider_ref["node"] for m in lease.machines] == ["n1", "n2"]
        assert {m.provider_ref["isolation"] for m in lease.machines} == {"slurm-job"}   # `fleet status --json`
        assert all(m.gpu_slots == (0,) and m.host == "127.0.0.1" for m in lease.machines)
        job_id = lease.machines[0].provider_ref["job_id"]
        assert [ssh_run(m, "echo $FLEET_MACHINE_ID").strip() for m in lease.machines] == \
            [f"{lease_id}-n0", f"{lease_id}-n1"]
        # The test cluster's nodes share this host's filesystem: each machine's watchdog holds its deadline.
        assert all((Path(m.workdir) / ".fleet" / "watchdog.pid").is_file() for m in lease.machines)
        assert {s.state for s in provider.describe(lease)} == {"running"}
        job = SlurmCommands(LocalRunner(slurm_env.env)).job(job_id)
        assert job.name == f"fleet-{lease_id}" and job.gpus == 2 and job.node_count == 2
    finally:
        provider.release(lease)
    assert all(s.state == "gone" for s in provider.describe(lease))
    provider.release(lease)                                     # idempotent
    wait_for(lambda: not list(node_dir.iterdir()), 60, "node directories (host key) to be removed")
    # An salloc allocation shows COMPLETING while its steps' processes exit (KillWait), then ends.
    wait_for(lambda: not queued_for(lease_id, slurm_env), 60, "the allocation to leave the queue")


def test_a_workdir_with_a_percent_a_space_and_an_apostrophe_still_gives_machines_one_can_log_in_to(
        make, node_dir):
    odd = node_dir / "team's work %u dir"       # sshd reads %u in AuthorizedKeysFile as the user name
    provider = make(workdir=str(odd))
    lease = provider.lease(plan_for(provider, "slurm-1gpu", 1), new_lease_id(), 120)
    try:
        machine, = lease.machines
        assert Path(machine.workdir).parent.parent == odd
        assert ssh_run(machine, "echo $FLEET_MACHINE_ID").strip() == machine.id
    finally:
        provider.release(lease)


def test_second_lease_pends_with_its_reason_then_runs_when_the_first_ends(make, slurm_env):
    provider = make()
    first = provider.lease(plan_for(provider, "slurm-2gpu", 4), new_lease_id(), 120)    # every GPU
    statuses, result = [], {}

    def second():
        try:
            result["lease"] = provider.lease(plan_for(provider, "slurm-1gpu", 1), new_lease_id(), 120,
                                             watch=LeaseWatch(cancel=threading.Event(), on_queue=statuses.append,
                                                              max_wait_s=240))
        except BaseException as exc:  # noqa: BLE001
            result["error"] = exc

    thread = threading.Thread(target=second)
    thread.start()
    try:
        wait_for(lambda: any(s.reason == "Resources" for s in statuses), 60, "the second lease to pend on Resources")
        assert statuses[0].state == "PENDING" and "lease" not in result
    finally:
        provider.release(first)
        thread.join(240)
    assert "error" not in result, result.get("error")
    try:
        assert len(result["lease"].machines) == 1
        assert ssh_run(result["lease"].machines[0], "echo ok").strip() == "ok"
    finally:
        provider.release(result["lease"])


def test_wait_expiring_cancels_with_exit_10_and_leaves_nothing_queued(make, slurm_env):
    provider = make()
    first = provider.lease(plan_for(provider, "slurm-2gpu", 4), new_lease_id(), 120)
    lease_id = new_lease_id()
    try:
        with pytest.raises(E.QueueWaitExpired) as err:
            provider.lease(plan_for(provider, "slurm-1gpu", 1), lease_id, 120,
                           watch=LeaseWatch(cancel=threading.Event(), max_wait_s=3))
        assert err.value.exit_code == 10
        assert "still pending" in err.value.one_line() and "Resources" in err.value.one_line()
        assert "\n" not in err.value.one_line()
        assert not queued_for(lease_id, slurm_env)
    finally:
        provider.release(first)


def test_cancel_while_pending_scancels(make, slurm_env):
    provider = make()
    first = provider.lease(plan_for(provider, "slurm-2gpu", 4), new_lease_id(), 120)
    lease_id, cancel = new_lease_id(), threading.Event()
    try:
        threading.Timer(2.0, cancel.set).start()
        with pytest.raises(Cancelled):
            provider.lease(plan_for(provider, "slurm-1gpu", 1), lease_id, 120,
                           watch=LeaseWatch(cancel=cancel, max_wait_s=120))
        assert not queued_for(lease_id, slurm_env)
    finally:
        provider.release(first)


@pytest.mark.parametrize("settings, template, gpus, error, reason", [
    ({"partition": "nosuch"}, "slurm-1gpu", 1, E.InvalidPartition, "Invalid partition"),
    ({"account": "nosuch"}, "slurm-1gpu", 1, E.InvalidAccount, "Invalid account"),
    ({"qos": "nosuch"}, "slurm-1gpu", 1, E.InvalidQos, "Invalid qos"),
    ({}, "slurm-4gpu", 4, E.GresUnsatisfiable, "node configuration is not available"),
    ({"qos": "onegpu"}, "slurm-1gpu", 2, E.QosLimitExceeded, "QOSMaxGRESPerJob"),
])
def test_refusals_are_one_line_naming_slurm_and_leave_nothing_queued(make, slurm_env, settings, template, gpus,
                                                                      error, reason):
    if not slurm_env.accounting and ("account" in settings or "qos" in settings):
        pytest.skip("needs slurmdbd")
    provider = make(**settings)
    lease_id = new_lease_id()
    with pytest.raises(error) as err:
        provider.lease(plan_for(provider, template, gpus), lease_id, 120)
    line = err.value.one_line()
    assert reason in line and "\n" not in line and err.value.exit_code in (2, 10)
    assert not queued_for(lease_id, slurm_env)


def test_unreachable_login_node_is_one_line(make, fleet_home):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]          # closed once the block ends: nothing listens there
    provider = make(login="nobody@127.0.0.1", login_port=port)
    with pytest.raises(E.LoginNodeUnreachable) as err:
        provider.lease(plan_for(provider, "slurm-1gpu", 1), new_lease_id(), 120)
    assert "login node nobody@127.0.0.1 did not answer" in err.value.one_line() and err.value.exit_code == 10


@pytest.fixture
def resume_n2(slurm_env):
    yield
    env = {**os.environ, **slurm_env.env}
    seen = []

    def n2_idle() -> bool:
        # ReturnToService=2 brings it back when its slurmd registers; resume covers a node left down.
        subprocess.run(["scontrol", "update", "nodename=n2", "state=resume"], capture_output=True, timeout=30, env=env)
        seen.append(subprocess.run(["sinfo", "-h", "-N", "-n", "n2", "-p", slurm_env.partition, "-o", "%t"],
                                   capture_output=True, text=True, timeout=30, env=env).stdout.strip())
        # "mix": seen in the fixture cluster after NODE_FAIL with slurmctld itself saying IDLE
        # (CPUs of the failed job still counted); the node takes jobs again either way.
        return seen[-1] in ("idle", "mix")

    try:
        wait_for(n2_idle, 120, "n2 to be idle again", interval=1)
    except AssertionError as exc:
        queue = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %T %r %N %j"], capture_output=True, text=True,
                               timeout=30, env=env).stdout
        raise AssertionError(f"{exc}: sinfo said {seen[-3:]}; squeue: {queue!r}") from None


def test_node_failure_mid_lease_is_reported_naming_node_fail(make, slurm_env, resume_n2):
    provider = make()
    lost: list[str] = []
    lease = provider.lease(plan_for(provider, "slurm-1gpu", 2), new_lease_id(), 120,
                           watch=LeaseWatch(cancel=threading.Event(), on_lost=lost.append))
    try:
        subprocess.run(["scontrol", "update", "nodename=n2", "state=down", "reason=fleet-test"], check=True,
                       capture_output=True, timeout=30, env={**os.environ, **slurm_env.env})
        wait_for(lambda: lost, 60, "the provider to report the lost allocation")
        assert "NODE_FAIL" in lost[0] and "\n" not in lost[0], lost
        assert all(s.state == "gone" for s in provider.describe(lease))
    finally:
        provider.release(lease)
    assert not queued_for(lease.id, slurm_env)
