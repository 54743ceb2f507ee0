"""The ssh provider against real sshd hosts on loopback: slots, workdirs, watchdogs, down hosts."""
from __future__ import annotations

import json
import os
import time

import pytest

from fleet.config.model import Config
from fleet.errors import CapacityError, InfrastructureError
from fleet.providers.ssh.hosts import Host, Inventory, fingerprint, parse_discovery, probe
from fleet.ids import new_lease_id
from fleet.plan import make_plan
from fleet.providers.ssh import SSHHostsProvider
from fleet.providers.ssh.settings import SSHSettings
from fleet.providers.ssh.slots import active, place
from fleet.remote.ssh import connect
from fleet.state import open_state
from tests.conftest import processes_under, wait_until
from tests.fixtures.ssh_hosts import PYTHON, HostFarm


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    farm = HostFarm(tmp_path_factory.mktemp("ssh-hosts"))
    for i in range(3):
        farm.start(f"h{i}")
    yield farm
    farm.stop()
    assert not processes_under(farm.base / "hosts"), processes_under(farm.base / "hosts")


@pytest.fixture
def env(farm, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(farm.home))
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "fleet-home"))
    monkeypatch.delenv("FLEET_STATE_URL", raising=False)
    return tmp_path


def provider_for(farm, hosts=None, state=None, **kw) -> SSHHostsProvider:
    config = Config(path=None, base_dir=farm.base, project="p", name="p", command="true", provider="ssh",
                    template="hosts", python=PYTHON,
                    provider_settings={"ssh": SSHSettings(hosts=farm.configs(hosts))})
    return SSHHostsProvider(config=config, state=state or open_state(), **kw)


def plan_for(provider, gpus: int, template: str = "hosts", user: str = "alice", max_s: int = 600):
    return make_plan(provider="ssh", template=provider.templates()[template], gpus=gpus, max_duration_s=max_s,
                     heartbeat_ttl_s=60, project="p", user=user)


def test_discovery_output_is_parsed():
    home, gpus, model = parse_discovery("HOME=/home/a\nGPUS\n0, NVIDIA H100 80GB HBM3\n1, NVIDIA H100 80GB HBM3\n")
    assert (home, gpus, model) == ("/home/a", 2, "NVIDIA H100 80GB HBM3")
    assert parse_discovery("HOME=/root\n") == ("/root", None, None)   # no nvidia-smi: unknown, not zero
    assert parse_discovery("HOME=/r\nGPUS\n")[1] == 0


def test_best_fit_keeps_whole_hosts_free_for_big_requests():
    placed = place([("a", 2)], {"h0": 4, "h1": 4}, {"h1": {0, 1}})
    assert placed[0].host == "h1" and placed[0].slots == (2, 3)
    assert place([("a", 4)], {"h0": 4, "h1": 4}, {"h0": {0}, "h1": {3}}) is None


def test_lease_reserves_distinct_slots_and_a_running_watchdog_per_machine(farm, env):
    provider = provider_for(farm)
    first = provider.lease(plan_for(provider, 2), new_lease_id(), 120)
    second = provider.lease(plan_for(provider, 2, user="bob"), new_lease_id(), 120)
    try:
        (a,), (b,) = first.machines, second.machines
        taken = {(m.provider_ref["host"], s) for m in (a, b) for s in m.gpu_slots}
        assert len(taken) == 4 and len(a.gpu_slots) == len(b.gpu_slots) == 2
        # best fit: the second lease fills the host the first one started, leaving others whole
        assert a.provider_ref["host"] == b.provider_ref["host"]
        assert a.workdir != b.workdir and f"/{first.id}/" in a.workdir
        assert [s.state for s in provider.describe(first)] == ["running"]
        with connect(a) as s:
            assert s.run(["test", "-d", a.workdir]).exit_code == 0
            assert json.loads(s.run([a.python, a.agent_path, "status", "--state-dir", a.state_dir]).stdout)[
                "watchdog_alive"]
        rows = active(provider.state.db)
        assert {(r["lease_id"], r["owner"]) for r in rows} == {(first.id, "alice"), (second.id, "bob")}
    finally:
        provider.release(first)
        provider.release(second)
    assert active(provider.state.db) == []
    assert not os.path.exists(a.workdir) and not os.path.exists(b.workdir)
    assert [s.state for s in provider.describe(first)] == ["gone"]
    assert {r["name"] for r in provider.state.db.execute("SELECT name FROM users")} == {"alice", "bob"}


def test_request_larger_than_any_host_is_refused_with_capacity_error(farm, env):
    provider = provider_for(farm)
    with pytest.raises(CapacityError, match=r"not enough free GPU slots .* free now h0 4/4"):
        provider.lease(plan_for(provider, 5), new_lease_id(), 60)
    assert active(provider.state.db) == []


def test_machines_split_across_hosts_when_template_says_so(farm, env):
    provider = provider_for(farm)
    lease = provider.lease(plan_for(provider, 8, template="hosts-4gpu"), new_lease_id(), 60)
    try:
        assert [m.node_rank for m in lease.machines] == [0, 1]
        assert len({m.provider_ref["host"] for m in lease.machines}) == 2
        assert all(m.gpu_slots == (0, 1, 2, 3) for m in lease.machines)
    finally:
        provider.release(lease)


def test_watchdog_ends_only_its_own_lease_processes_never_the_host(farm, env):
    provider = provider_for(farm, hosts=farm.hosts[:1])
    short = provider.lease(plan_for(provider, 1), new_lease_id(), 3)
    other = provider.lease(plan_for(provider, 1), new_lease_id(), 120)
    (m,), (o,) = short.machines, other.machines
    try:
        pids = {}
        with connect(m) as s:
            for tag in (m.id, o.id, "not-fleet"):
                r = s.run(f"FLEET_MACHINE_ID={tag} setsid nohup sleep 300 </dev/null >/dev/null 2>&1 & echo $!")
                pids[tag] = int(r.stdout.strip())
        assert wait_until(lambda: not _alive(pids[m.id]), timeout=15), "the lease's process outlived its deadline"
        assert _alive(pids[o.id]) and _alive(pids["not-fleet"]), "the watchdog killed another lease's process"
        assert _alive(farm.hosts[0].pid), "the host's sshd must survive a lease's deadline"
        assert [s.state for s in provider.describe(short)] == ["gone"]
        assert [s.state for s in provider.describe(other)] == ["running"]
    finally:
        provider.release(short)
        provider.release(other)         # ends o's tagged sleep too
        os.kill(pids["not-fleet"], 9) if _alive(pids.get("not-fleet", 0)) else None
    assert wait_until(lambda: not _alive(pids[o.id]), timeout=10)


def test_unknown_host_key_is_refused_not_learnt(farm, env, tmp_path, monkeypatch):
    bare = tmp_path / "bare-home"
    (bare / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(bare))             # no known_hosts at all
    host = Host(name="h0", address="127.0.0.1", port=farm.hosts[0].port, key_path=str(farm.key), gpus=4)
    result = probe(host)
    assert not result.up and "host key is not known" in result.detail
    assert not (bare / ".ssh" / "known_hosts").exists()
    pinned = Host(**{**host.to_json(), "host_key": farm.hosts[0].host_key})
    assert probe(pinned).up
    assert fingerprint(farm.hosts[0].host_key).startswith("SHA256:")


def test_a_host_that_goes_down_mid_lease_is_skipped_and_marked(farm, env, tmp_path, monkeypatch):
    import fleet.providers.ssh.provider as ssh_provider
    from fleet.providers.ssh.slots import reclaim_dead
    monkeypatch.setattr(ssh_provider, "HELD_SLACK_S", 1.0)
    extra = HostFarm.start(farm, "down1")             # a host this test may kill
    try:
        provider = provider_for(farm, hosts=[farm.hosts[0], extra])
        on_extra = None
        leases = []
        for _ in range(2):                            # fill both hosts; one lease lands on `down1`
            lease = provider.lease(plan_for(provider, 4), new_lease_id(), 6)
            leases.append(lease)
            if lease.machines[0].provider_ref["host"] == "down1":
                on_extra = lease
        assert on_extra is not None
        survivor = next(x for x in leases if x is not on_extra)
        watchdog_pidfile = os.path.join(on_extra.machines[0].state_dir, "watchdog.pid")
        extra.kill_sshd()
        assert [s.state for s in provider.describe(on_extra)] == ["unreachable"]
        provider.release(on_extra)                   # does not hang or raise; host marked down
        now = on_extra.created_at.isoformat()
        provider.state.db.execute(                   # its row, released, as `fleet down` leaves it
            "INSERT INTO leases (id, provider, template, project, owner, status, created_at, deadline,"
            " max_deadline, heartbeat_ttl_s) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (on_extra.id, "ssh", "hosts", "p", "alice", "released", now, on_extra.deadline.isoformat(),
             on_extra.max_deadline.isoformat(), 60))
        # Its processes may still hold the GPUs until its watchdog's deadline: the slots stay taken.
        assert {r["lease_id"] for r in active(provider.state.db)} == {survivor.id, on_extra.id}
        provider.release(on_extra)                   # a second release does not free them either
        assert reclaim_dead(provider.state.db, ["down1"]) == 0
        assert {r["lease_id"] for r in active(provider.state.db)} == {survivor.id, on_extra.id}
        status = {h.name: h.status for h in Inventory(provider.state.db).list()}
        assert status["down1"] == "down"
        with pytest.raises(CapacityError, match="free now h0 0/4"):   # down1 is skipped, not tried
            provider.lease(plan_for(provider, 4), new_lease_id(), 6)
        provider.release(survivor)
        # Unreachable, the machine still ends itself: its watchdog exits at the deadline it was given.
        pid = int(open(watchdog_pidfile).read().split()[0])   # "PID STARTTIME"
        assert wait_until(lambda: not _alive(pid), timeout=20)
        # Past that deadline (and the slack), the next reservation's reclaim frees them.
        assert wait_until(lambda: reclaim_dead(provider.state.db, ["down1"]) == 4, timeout=20)
        assert active(provider.state.db) == []
    finally:
        extra.kill_sshd()


def test_when_every_freshly_probed_host_died_the_lease_says_none_is_up_naming_them(farm, env):
    first, second = HostFarm.start(farm, "dies1"), HostFarm.start(farm, "dies2")
    try:
        provider = provider_for(farm, hosts=[first, second])
        provider.release(provider.lease(plan_for(provider, 1), new_lease_id(), 60))   # both probed: up
        first.kill_sshd()
        second.kill_sshd()   # within the probe's freshness: the inventory still says up for both
        with pytest.raises(CapacityError, match="no SSH host is up") as err:
            provider.lease(plan_for(provider, 1), new_lease_id(), 60)
        assert "dies1, dies2 did not answer SSH just now" in err.value.one_line(), err.value.one_line()
        assert active(provider.state.db) == []
    finally:
        first.kill_sshd()
        second.kill_sshd()


def test_lease_fails_cleanly_when_no_host_is_usable(farm, env):
    provider = provider_for(farm, hosts=[])
    with pytest.raises(CapacityError, match="no SSH host is up"):
        provider.lease(plan_for(provider, 1), new_lease_id(), 60)


def test_declared_hosts_without_gpus_are_reported(farm, env):
    provider = provider_for(farm, hosts=farm.hosts[:1])
    provider._config_hosts[0].gpus = None          # not declared, and no nvidia-smi on the test host
    with pytest.raises(InfrastructureError):
        provider.lease(plan_for(provider, 1), new_lease_id(), 60)
    (h0,) = Inventory(provider.state.db, provider._config_hosts).list()
    assert h0.status == "up" and "declare gpus" in (h0.status_detail or "")


def _alive(pid: int) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def _wait(seconds: float) -> None:
    time.sleep(seconds)


def test_gpus_are_discovered_with_nvidia_smi_when_not_declared(farm, env, tmp_path):
    fake = tmp_path / "fakebin"
    fake.mkdir()
    smi = fake / "nvidia-smi"
    smi.write_text('#!/bin/sh\n[ "$1" = "--query-gpu=index,name" ] || exit 9\n'
                   'echo "0, NVIDIA H100 80GB HBM3"\necho "1, NVIDIA H100 80GB HBM3"\n')
    smi.chmod(0o755)
    gpu_host = HostFarm.start(farm, "gpu", path_prefix=fake)
    try:
        provider = provider_for(farm, hosts=[gpu_host])
        provider._config_hosts[0].gpus = None                 # not declared: ask the host
        lease = provider.lease(plan_for(provider, 2), new_lease_id(), 60)
        try:
            assert lease.machines[0].gpu_slots == (0, 1)
            assert lease.machines[0].instance_type == "NVIDIA H100 80GB HBM3"
        finally:
            provider.release(lease)
        with pytest.raises(CapacityError, match="free now gpu 2/2"):
            provider.lease(plan_for(provider, 3), new_lease_id(), 60)
    finally:
        gpu_host.kill_sshd()


def test_slots_of_a_lease_past_its_hard_deadline_are_reclaimed(farm, env):
    """A controller that crashed and was never `fleet down`ed must not hold the GPUs forever."""
    from datetime import timedelta
    from fleet.models import utcnow
    provider = provider_for(farm, hosts=farm.hosts[:1])
    crashed = provider.lease(plan_for(provider, 4), new_lease_id(), 60)
    try:
        with pytest.raises(CapacityError):
            provider.lease(plan_for(provider, 4), new_lease_id(), 60)
        past = (utcnow() - timedelta(minutes=1)).isoformat()
        provider.state.db.execute(
            "INSERT INTO leases (id, provider, template, project, owner, status, created_at, deadline,"
            " max_deadline, heartbeat_ttl_s) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (crashed.id, "ssh", "hosts", "p", "alice", "active", past, past, past, 60))
        successor = provider.lease(plan_for(provider, 4, user="bob"), new_lease_id(), 60)
        provider.release(successor)
        assert successor.machines[0].gpu_slots == (0, 1, 2, 3)
    finally:
        provider.release(crashed)


def test_gpu_type_places_machines_only_on_hosts_with_that_gpu(farm, env):
    """`--gpus L4:4` on the ssh provider: hosts declare (or nvidia-smi reports) their GPU model; the
    offer exists only where some host has it, the lease lands there, and a missing type is one line
    naming each host's GPUs."""
    from dataclasses import replace

    from fleet.errors import UsageError
    from fleet.gpus import GpuType
    from fleet.run.offer import choose_offer
    configs = farm.configs(farm.hosts[:2])
    configs[0].gpu_model, configs[1].gpu_model = "NVIDIA A100-SXM4-80GB", "NVIDIA L4"
    config = Config(path=None, base_dir=farm.base, project="p", name="p", command="true", provider="ssh",
                    python=PYTHON, gpus=4, gpu_type=GpuType("L4"),
                    provider_settings={"ssh": SSHSettings(hosts=configs)})
    provider = SSHHostsProvider(config=config, state=open_state())
    offer = choose_offer(provider, config)
    assert (offer.template.name, offer.machine_count) == ("hosts", 1)   # the ssh provider's own default
    lease = provider.lease(offer.to_plan(), new_lease_id(), 60)
    try:
        assert [m.provider_ref["host"] for m in lease.machines] == [farm.hosts[1].name]
        assert lease.machines[0].instance_type == "NVIDIA L4" and lease.machines[0].zone == farm.hosts[1].name
    finally:
        provider.release(lease)
    a100 = choose_offer(provider, replace(config, gpu_type=GpuType("A100", 80)))
    assert a100.machine_count == 1
    with pytest.raises(UsageError) as err:
        choose_offer(provider, replace(config, gpu_type=GpuType("H100")))
    assert (f"no machine of the ssh provider has 4 × H100 GPUs; it has: NVIDIA A100-SXM4-80GB "
            f"({farm.hosts[0].name}); NVIDIA L4 ({farm.hosts[1].name})") in err.value.one_line()


def test_a_gpu_type_request_probes_hosts_whose_model_is_not_known_yet(farm, env, tmp_path):
    """`--gpus H100:2` right after a host was declared (never probed): planning asks nvidia-smi."""
    from fleet.gpus import GpuType
    from fleet.run.offer import choose_offer
    fake = tmp_path / "fakebin"
    fake.mkdir()
    smi = fake / "nvidia-smi"
    smi.write_text('#!/bin/sh\n[ "$1" = "--query-gpu=index,name" ] || exit 9\n'
                   'echo "0, NVIDIA H100 80GB HBM3"\necho "1, NVIDIA H100 80GB HBM3"\n')
    smi.chmod(0o755)
    gpu_host = HostFarm.start(farm, "h100", path_prefix=fake)
    try:
        configs = farm.configs([farm.hosts[0], gpu_host])
        configs[1].gpus = None                                # neither count nor model declared
        config = Config(path=None, base_dir=farm.base, project="p", name="p", command="true", provider="ssh",
                        python=PYTHON, gpus=2, gpu_type=GpuType("H100", 80),
                        provider_settings={"ssh": SSHSettings(hosts=configs)})
        provider = SSHHostsProvider(config=config, state=open_state())
        offer = choose_offer(provider, config)
        lease = provider.lease(offer.to_plan(), new_lease_id(), 60)
        try:
            assert [m.provider_ref["host"] for m in lease.machines] == [gpu_host.name]
        finally:
            provider.release(lease)
    finally:
        gpu_host.kill_sshd()
