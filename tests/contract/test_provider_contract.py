"""The provider contract (fleet/providers/base.py), checked the same way against every registered
provider: local sshds, team SSH hosts, the AWS sandbox (moto + loopback sshds) and the fake.

Each provider gets a small harness saying how to build it here and how to see, from the outside,
that a machine has ended; the checks themselves are shared. A provider registered without a
harness fails `test_every_registered_provider_is_covered`, so a new provider cannot skip the suite.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from fleet.config.model import Config
from fleet.errors import FleetError, UsageError
from fleet.ids import new_lease_id
from fleet.models import Lease, utcnow
from fleet.providers import registry
from fleet.providers.base import Provider, ReleasesMachines, ReportsMachines, choose_mix
from fleet.providers.contract import ContractHarness, plugin_harnesses
from tests.conftest import wait_until

pytestmark = pytest.mark.timeout(240)

class FakeClock:
    def __init__(self):
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------- one harness per provider

class Harness(ContractHarness):
    """fleet's own harnesses; another package's come through its entry point (fleet/providers/contract.py)."""


class LocalHarness(Harness):
    template = "local-1gpu"

    def __init__(self, request):
        request.getfixturevalue("fleet_home")

    def make(self):
        from fleet.providers.local import LocalProvider
        return LocalProvider()


class SSHHarness(Harness):
    template = "hosts-1gpu"

    def __init__(self, request):
        farm = request.getfixturevalue("ssh_farm")
        home = request.getfixturevalue("fleet_home")
        mp = request.getfixturevalue("monkeypatch")
        mp.setenv("HOME", str(farm.home))
        self.farm, self.home = farm, home

    def make(self):
        from fleet.providers.ssh import SSHHostsProvider
        from fleet.providers.ssh.settings import SSHSettings
        from fleet.state import open_state
        from tests.fixtures.ssh_hosts import PYTHON
        config = Config(path=None, base_dir=self.home, project="contract", name="contract", command="true",
                        provider="ssh", template=self.template, python=PYTHON,
                        provider_settings={"ssh": SSHSettings(hosts=self.farm.configs())})
        return SSHHostsProvider(config=config, state=open_state())


class AWSSandboxHarness(Harness):
    template = "aws-1gpu"

    def __init__(self, request):
        self.stack = request.getfixturevalue("aws_stack")
        request.getfixturevalue("fleet_home")

    def make(self):
        from fleet.providers.aws.provider import AWSProvider
        from fleet.providers.aws.sandbox import Sandbox
        from tests.fixtures.aws import fast_sleep
        return AWSProvider(outputs=self.stack, sandbox=Sandbox(), sleep=fast_sleep, ready_timeout_s=60)

    def wait_ended(self, provider, lease) -> bool:
        # EC2 keeps a sandbox instance "running"; the machine itself is its loopback sshd, which the
        # watchdog ends at the deadline.
        from fleet.providers.local.sshd import pid_alive
        pids = [int(_binding(m)["sshd_pid"]) for m in lease.machines]
        return wait_until(lambda: not any(pid_alive(p) for p in pids), 60, 0.25)

    def state_dir(self, machine) -> Path | None:
        return Path(_binding(machine)["workdir"]) / ".fleet"


class FakeHarness(Harness):
    template = "fake-1gpu"

    def __init__(self, request):
        self.root = request.getfixturevalue("tmp_path") / "fake"
        self.clock = FakeClock()

    def make(self):
        from fleet.providers.fake import FakeProvider
        return FakeProvider(root=self.root, clock=self.clock)

    def wait_ended(self, provider, lease) -> bool:
        self.clock.now += 3600          # simulated: nothing but time passes
        return all(s.state == "gone" for s in provider.describe(lease))

    def state_dir(self, machine) -> Path | None:
        return None


class SlurmHarness(Harness):
    """Allocations on the real test cluster (tests/fixtures/slurm.py); node directories under tmp."""
    template = "slurm-1gpu"

    def __init__(self, request):
        request.getfixturevalue("slurm_env")
        request.getfixturevalue("fleet_home")
        self.nodes = request.getfixturevalue("tmp_path") / "slurm-nodes"
        self.nodes.mkdir()

    def make(self):
        from fleet.providers.slurm.provider import SlurmProvider
        from fleet.providers.slurm.settings import SlurmSettings
        return SlurmProvider(SlurmSettings(workdir=str(self.nodes), poll_s=0.5))


HARNESSES = {"local": LocalHarness, "ssh": SSHHarness, "aws": AWSSandboxHarness, "fake": FakeHarness,
             "slurm": SlurmHarness, **plugin_harnesses()}


def _binding(machine) -> dict:
    import json
    return json.loads((Path(machine.provider_ref["sandbox_dir"]) / "binding.json").read_text())


@pytest.fixture(scope="module")
def ssh_farm(tmp_path_factory):
    from tests.conftest import processes_under
    from tests.fixtures.ssh_hosts import HostFarm
    farm = HostFarm(tmp_path_factory.mktemp("contract-hosts"))
    farm.start("h0")
    yield farm
    farm.stop()
    assert not processes_under(farm.base / "hosts")


@pytest.fixture(scope="module")
def aws_stack(moto_server):
    from fleet.providers.aws.outputs import load_outputs
    from fleet.providers.aws.sandbox import create_stack
    from tests.fixtures.aws import point_boto3_at, reset_moto
    with pytest.MonkeyPatch.context() as mp:
        point_boto3_at(mp, moto_server)
        yield load_outputs(create_stack())
    reset_moto(moto_server)


@pytest.fixture(params=list(HARNESSES))
def harness(request):
    h = HARNESSES[request.param](request)
    h.name = request.param
    return h


@pytest.fixture
def provider(harness):
    return harness.make()


def _lease(harness, provider, deadline_s: int = 120, **kw):
    return provider.lease(harness.plan(provider), new_lease_id(), deadline_s, **kw)


# ---------------------------------------------------------------- the checks

def test_every_registered_provider_is_covered():
    assert set(registry.names()) == set(HARNESSES), "a registered provider needs a harness in this suite"


def test_found_by_name_and_has_the_core(harness, provider):
    assert registry.provider_class(harness.name) is type(provider)
    assert isinstance(provider, Provider)
    assert provider.name == harness.name
    mix = choose_mix(provider, harness.template, harness.gpus)
    assert mix.provider == harness.name and mix.machines >= 1 and mix.gpus == harness.gpus


def test_round_trip_reported_before_return_and_idempotent_release(harness, provider):
    reported, calls = [], []
    kw = {"on_machine": reported.append} if isinstance(provider, ReportsMachines) else {}
    lease = _lease(harness, provider, **kw)
    calls.append("returned")
    try:
        assert lease.machines and lease.provider == harness.name
        if kw:
            assert sorted(m.id for m in reported) == sorted(m.id for m in lease.machines)
        states = provider.describe(lease)
        assert {s.machine_id for s in states} >= {m.id for m in lease.machines}
        assert all(s.state in ("running", "pending") for s in states if not s.unrecorded)
    finally:
        provider.release(lease)
    assert all(s.state == "gone" for s in provider.describe(lease))
    provider.release(lease)                  # idempotent: already gone is fine


def test_releasing_some_machines_leaves_the_others_running(harness, provider):
    """ReleasesMachines (a sweep's pool giving back idle machines): exactly the named ones end."""
    if not isinstance(provider, ReleasesMachines):
        pytest.skip(f"{harness.name} does not release part of a lease")
    from fleet.plan import make_plan
    plan = make_plan(provider=provider.name, mix=choose_mix(provider, harness.template, 2 * (harness.gpus or 1)),
                     max_duration_s=600, heartbeat_ttl_s=60, project="contract", user="tester")
    lease = provider.lease(plan, new_lease_id(), 120)
    try:
        assert len(lease.machines) == 2
        first, second = sorted(lease.machines, key=lambda m: m.node_rank)
        provider.release_machines(lease, [first.id])
        states = {s.machine_id: s.state for s in provider.describe(lease) if not s.unrecorded}
        assert states[first.id] == "gone" and states[second.id] in ("running", "pending"), states
        provider.release_machines(lease, [first.id])      # idempotent: already gone is fine
    finally:
        provider.release(lease)
    assert all(s.state == "gone" for s in provider.describe(lease))


def test_deadline_held_without_the_controller(harness, provider):
    lease = _lease(harness, provider, deadline_s=3)
    try:
        assert harness.wait_ended(provider, lease), "a machine outlived its deadline with no controller"
    finally:
        provider.release(lease)


def test_report_failure_releases_everything(harness, provider):
    if not isinstance(provider, ReportsMachines):
        pytest.skip(f"{harness.name} does not report machines")

    made = []

    def refuse(machine):
        made.append(machine)
        raise RuntimeError("the caller could not record this machine")

    lease_id = new_lease_id()
    with pytest.raises(Exception) as err:      # as is, or as the provider's one-line FleetError
        provider.lease(harness.plan(provider), lease_id, 120, on_machine=refuse)
    assert "could not record this machine" in str(err.value)
    assert made, "the machine was reported before lease failed"
    now = utcnow()
    partial = Lease(id=lease_id, provider=provider.name, template=harness.template, machines=made,
                    created_at=now, deadline=now, max_deadline=now)
    assert all(s.state == "gone" for s in provider.describe(partial)), "a refused machine was left running"


def _release_spares_foreign(harness, provider):
    foreign = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        lease = _lease(harness, provider)
        try:
            for m in lease.machines:
                state = harness.state_dir(m)
                if state is None:
                    continue
                # The machine's watchdog died and its pid now belongs to someone else: the pid file
                # fleet left behind names a process fleet does not own. So does a stale run pid file.
                watchdog = state / "watchdog.pid"
                assert wait_until(lambda: watchdog.exists() and watchdog.read_text().strip(), 30)
                os.kill(int(watchdog.read_text().split()[0]), signal.SIGKILL)   # "PID STARTTIME"
                watchdog.write_text(f"{foreign.pid}\n")
                (state / "run-stale-0.pid").write_text(f"{foreign.pid}\n")
        finally:
            provider.release(lease)
        time.sleep(0.5)
        assert foreign.poll() is None, "release signalled a process fleet does not own"
    finally:
        foreign.kill()
        foreign.wait()


@pytest.mark.parametrize("harness", ["fake", "ssh", "local", "aws"], indirect=True)
def test_release_never_signals_a_process_it_does_not_own(harness, provider):
    _release_spares_foreign(harness, provider)


@pytest.mark.parametrize("template, gpus", [("no-such-template", 1), (None, 0), (None, -2)])
def test_bad_input_is_one_line_fleet_error(harness, provider, template, gpus):
    with pytest.raises(FleetError) as err:
        provider.offers(template or harness.template, gpus)
    assert err.value.exit_code != 0
    assert "\n" not in err.value.one_line() and str(err.value)


def test_unknown_provider_name_is_one_line_with_a_suggestion():
    with pytest.raises(UsageError) as err:
        registry.provider_class("lcoal")
    assert "did you mean 'local'" in err.value.one_line() and "\n" not in err.value.one_line()
