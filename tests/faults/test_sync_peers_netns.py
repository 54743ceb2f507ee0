"""Fan-out across hosts on a real network: each machine's sshd (and so its sync helper) lives in a
network namespace of its own, with a chunk cache of its own (its HOME). On one bridge the hosts reach
each other, and every host but the first fetches the data from the first (sync_peers), not from the
controller. Where the first host's port cannot be reached (packets to it dropped, as a firewall
does), the others wait one connection timeout at most, then the controller feeds them; the next
sync remembers that and does not try."""
from __future__ import annotations

import os
import random
import time

import pytest

from fleet.snapshots import create_snapshot, open_store
from fleet.snapshots.sync import Target, sync_lease
from fleet.snapshots.sync_remote import data_dir

from .netns import Bridge, Link, NetnsProvider, _ip, cannot_make_namespaces

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def namespaces_possible():
    reason = cannot_make_namespaces()
    if reason:
        pytest.skip(f"cannot make network namespaces here: {reason}")


def _lease(links, n):
    from fleet.ids import new_lease_id
    from fleet.plan import make_plan
    provider = NetnsProvider(links)
    plan = make_plan(provider="local", template=provider.template("local-1gpu"), gpus=n, max_duration_s=600,
                     heartbeat_ttl_s=120, project="test", user="tester")
    return provider, provider.lease(plan, new_lease_id(), 120)


def _data(tmp_path):
    rng = random.Random(3)
    src = tmp_path / "d"
    src.mkdir()
    for i in range(12):
        (src / f"f{i:02d}.bin").write_bytes(rng.randbytes(150_000 + i))
    store = open_store(None)
    snap = create_snapshot(src, store)
    return src, store, snap, sum(e.size for e in snap.manifest.entries if e.size)


def _same(machine, src):
    """Read on the machine through its own sshd (its namespace), not from this side's filesystem."""
    import subprocess
    listing = subprocess.run(
        ["ssh", "-p", str(machine.port), "-i", machine.key_path, "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
         f"{machine.user}@{machine.host}", f"cd {data_dir(machine, 'd')} && sha256sum *"],
        capture_output=True, text=True, timeout=60)
    import hashlib
    want = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in src.iterdir()}
    got = {line.split()[1]: line.split()[0] for line in listing.stdout.splitlines()}
    return got == want


def test_hosts_on_one_network_take_the_data_from_the_first_host(namespaces_possible, fleet_home, tmp_path):
    bridge = Bridge(3)
    provider = lease = None
    try:
        provider, lease = _lease(bridge.links, 3)
        src, store, snap, total = _data(tmp_path)
        stats = sync_lease(lease.machines, store,
                           lambda m: [Target(data_dir(m, "d"), [snap.id], read_only=True)])
        assert stats[0].bytes_sent == total
        for s in stats[1:]:
            assert s.bytes_sent == 0 and s.bytes_peer == total, (s.machine_id, s.direct_error)
        assert all(_same(m, src) for m in lease.machines)
    finally:
        if lease is not None:
            provider.release(lease)
        bridge.destroy()


def test_hosts_that_cannot_reach_the_first_are_fed_by_the_controller_after_one_timeout(
        namespaces_possible, fleet_home, tmp_path):
    links = [Link() for _ in range(2)]
    provider = lease = None
    try:
        for link in links:      # a route to the other host exists, but this host forwards nothing: dropped
            _ip("-n", link.ns, "route", "add", "10.213.0.0/16", "via", link.host_ip)
            # (whatever the host's ip_forward: a packet arriving on an interface that does not forward
            # is dropped without an ICMP answer, as a firewall drops it)
            with open(f"/proc/sys/net/ipv4/conf/{link.host_if}/forwarding", "w") as f:
                f.write("0")
        provider, lease = _lease(links, 2)
        src, store, snap, total = _data(tmp_path)
        t0 = time.monotonic()
        stats = sync_lease(lease.machines, store,
                           lambda m: [Target(data_dir(m, "d"), [snap.id], read_only=True)])
        took = time.monotonic() - t0
        assert [s.bytes_sent for s in stats] == [total, total] and stats[1].bytes_peer == 0
        assert (stats[1].direct_error or "").startswith("unreachable: ") and "timed out" in stats[1].direct_error
        assert took < 30, f"the fallback took {took:.1f}s"
        assert all(_same(m, src) for m in lease.machines)
        # the next sync (new data) remembers it and feeds both hosts at once, without the timeout
        (src / "new.bin").write_bytes(os.urandom(100_000))
        snap2 = create_snapshot(src, store)
        again = sync_lease(lease.machines, store,
                           lambda m: [Target(data_dir(m, "d"), [snap2.id], read_only=True)])
        assert [s.direct_error for s in again] == [None, None]
        assert again[1].bytes_sent > 0 and again[1].bytes_peer == 0
        assert all(_same(m, src) for m in lease.machines)
    finally:
        if lease is not None:
            provider.release(lease)
        for link in links:
            link.destroy()
