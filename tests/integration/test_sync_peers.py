"""Fan-out across hosts: the controller feeds one host, which then serves the chunks to the lease's
machines on other hosts (fleet/snapshots/sync_peers.py), so the controller's link carries the data
once per lease, not once per host. Real sshd machines, real helpers, TLS on loopback; each machine
gets a chunk cache of its own, as separate hosts have (the AWS sandbox's per-instance directory)."""
from __future__ import annotations

import dataclasses
import os
import socket
import zlib

from fleet.snapshots import create_snapshot, open_store
from fleet.snapshots import sync_peers
from fleet.snapshots.sync import Target, sync_lease
from fleet.snapshots.sync_remote import data_dir
from tests.integration.test_sync_host_cache import _same
from tests.integration.test_sync_host_cache import _tree as _random_tree


def _tree(root, files=30, size=120_000):
    return _random_tree(root, 7, files=files, size=size)


def _separate_hosts(machines, root):
    """The machines as if each were its own host: a chunk cache each, as separate instances have."""
    out = []
    for m in machines:
        d = root / m.id
        d.mkdir(parents=True)
        out.append(dataclasses.replace(m, provider_ref={**m.provider_ref, "sandbox_dir": str(d)}))
    return out


def _targets(name, sid):
    return lambda m: [Target(data_dir(m, name), [sid], read_only=True)]


def test_the_controller_sends_each_chunk_once_and_the_other_hosts_fetch_from_the_first(
        fleet_home, local_lease, tmp_path, monkeypatch):
    store = open_store(None)
    src = _tree(tmp_path / "d")
    snap = create_snapshot(src, store)
    total = sum(e.size for e in snap.manifest.entries if e.size)
    machines = _separate_hosts(local_lease(gpus=3).machines, tmp_path / "hosts")
    seeds = []
    real_serve = sync_peers.SeedDial.serve

    def serve(dial, *a, **k):
        seeds.append((real_serve(dial, *a, **k), dial.why))
        return seeds[-1][0]
    monkeypatch.setattr(sync_peers.SeedDial, "serve", serve)
    stats = sync_lease(machines, store, _targets("d", snap.id))
    for m in machines:
        assert _same(data_dir(m, "d"), src), m.id
    # a no-op re-sync asks nobody to serve: every machine answers "current" in one round trip
    again = sync_lease(machines, store, _targets("d", snap.id))
    assert len(seeds) == 1 and all(s.targets_current and not s.targets_written for s in again)
    first, *others = stats
    assert first.bytes_sent == total and first.bytes_peer == 0
    for s in others:
        assert s.bytes_sent == 0, f"{s.machine_id} was fed by the controller: {s.direct_error}"
        assert s.bytes_peer == total and s.chunks_peer > 0 and s.direct_error is None
    assert sum(s.bytes_sent for s in stats) == total                 # the controller's link: one copy
    # the seed stopped serving with the sync: its port no longer answers
    (seed, why), = seeds
    assert seed is not None, why
    try:
        socket.create_connection((seed.host, seed.port), timeout=2).close()
        raise AssertionError(f"the seed still listens on {seed.host}:{seed.port} after the sync")
    except OSError:
        pass


def test_hosts_that_were_fed_serve_the_next_ones_so_no_seed_serves_every_host(
        fleet_home, local_lease, tmp_path, monkeypatch):
    """One host served each round (FLEET_SYNC_PEERS_PER_SEED=1): the first feeds the second, then
    both feed one more each. The controller still sends each chunk once, and the first host's link
    carries two copies, not three."""
    monkeypatch.setenv("FLEET_SYNC_PEERS_PER_SEED", "1")
    store = open_store(None)
    src = _tree(tmp_path / "d", files=12)
    snap = create_snapshot(src, store)
    total = sum(e.size for e in snap.manifest.entries if e.size)
    machines = _separate_hosts(local_lease(gpus=4).machines, tmp_path / "hosts")
    stats = sync_lease(machines, store, _targets("d", snap.id))
    for m in machines:
        assert _same(data_dir(m, "d"), src), m.id
    n0, n1, n2, n3 = (m.id for m in machines)
    assert [s.peer_seed for s in stats] == [None, n0, n0, n1]
    assert [s.bytes_sent for s in stats] == [total, 0, 0, 0], [s.direct_error for s in stats]
    assert all(s.bytes_peer == total for s in stats[1:])


def test_a_seed_its_peers_could_not_reach_is_not_offered_again(fleet_home, local_lease, tmp_path, monkeypatch):
    """The second host's seed stops answering once fed (as a host that lost its network or its
    server would): the peer offered it in the second round falls back to the controller, and the
    third round offers only seeds that served."""
    monkeypatch.setenv("FLEET_SYNC_PEERS_PER_SEED", "1")
    store = open_store(None)
    src = _tree(tmp_path / "d", files=6)
    snap = create_snapshot(src, store)
    total = sum(e.size for e in snap.manifest.entries if e.size)
    machines = _separate_hosts(local_lease(gpus=6).machines, tmp_path / "hosts")
    dead = machines[1].id
    with socket.socket() as s:            # a port nothing listens on: refused at once
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    real_offer = sync_peers.Seed.offer
    monkeypatch.setattr(sync_peers.Seed, "offer",
                        lambda seed: {**real_offer(seed), **({"port": closed} if seed.machine_id == dead else {})})
    stats = sync_lease(machines, store, _targets("d", snap.id))
    for m in machines:
        assert _same(data_dir(m, "d"), src), m.id
    n0, n1, n2, n3, n4, n5 = (m.id for m in machines)
    assert [s.peer_seed for s in stats[:4]] == [None, n0, n0, n1]
    assert stats[3].bytes_sent == total and stats[3].direct_error.startswith("unreachable")
    assert dead not in {stats[4].peer_seed, stats[5].peer_seed}, [s.peer_seed for s in stats]
    assert [s.bytes_sent for s in stats[4:]] == [0, 0], [s.direct_error for s in stats[4:]]


def test_without_peers_every_host_is_fed_by_the_controller(fleet_home, local_lease, tmp_path, monkeypatch):
    """The comparison the test above rests on, and the switch that turns it off."""
    monkeypatch.setenv("FLEET_SYNC_PEERS", "0")
    store = open_store(None)
    src = _tree(tmp_path / "d")
    snap = create_snapshot(src, store)
    total = sum(e.size for e in snap.manifest.entries if e.size)
    machines = _separate_hosts(local_lease(gpus=2).machines, tmp_path / "hosts")
    stats = sync_lease(machines, store, _targets("d", snap.id))
    assert [s.bytes_sent for s in stats] == [total, total] and not any(s.bytes_peer for s in stats)
    assert all(_same(data_dir(m, "d"), src) for m in machines)


def test_a_seed_that_cannot_serve_leaves_every_host_fed_by_the_controller(fleet_home, local_lease, tmp_path):
    """The first host cannot listen where the others would reach it (an address it does not hold):
    the sync still completes, the reason is in the first machine's stats."""
    store = open_store(None)
    src = _tree(tmp_path / "d", files=8)
    snap = create_snapshot(src, store)
    total = sum(e.size for e in snap.manifest.entries if e.size)
    machines = _separate_hosts(local_lease(gpus=2).machines, tmp_path / "hosts")
    machines[0] = dataclasses.replace(machines[0], peer_host="192.0.2.1")      # TEST-NET-1: never bound here
    stats = sync_lease(machines, store, _targets("d", snap.id))
    assert [s.bytes_sent for s in stats] == [total, total]
    assert "could not serve its chunks" in (stats[0].direct_error or "")
    assert all(_same(data_dir(m, "d"), src) for m in machines)


def test_a_seed_missing_some_chunks_serves_the_rest_and_the_controller_pushes_those(
        fleet_home, local_lease, tmp_path):
    """A host whose cache lost entries (another lease's eviction) between feeding and serving."""
    store = open_store(None)
    src = _tree(tmp_path / "d", files=10)
    snap = create_snapshot(src, store)
    total = sum(e.size for e in snap.manifest.entries if e.size)
    machines = _separate_hosts(local_lease(gpus=2).machines, tmp_path / "hosts")
    real_serve = sync_peers.SeedDial.serve
    lost = []

    def evict_then_serve(dial, *a, **kw):
        cache = os.path.join(dial.machine.provider_ref["sandbox_dir"], "chunk-cache")
        entries = sorted(os.path.join(d, f) for d, _s, fs in os.walk(cache) for f in fs
                         if len(f) == 64 and os.path.basename(d) != "manifests")
        for p in entries[:3]:
            lost.append(os.path.getsize(p))
            os.unlink(p)
        return real_serve(dial, *a, **kw)
    import pytest
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sync_peers.SeedDial, "serve", evict_then_serve)
        stats = sync_lease(machines, store, _targets("d", snap.id))
    assert len(lost) == 3
    assert stats[1].bytes_sent == sum(lost) and stats[1].bytes_peer == total - sum(lost)
    assert "lacks" in (stats[1].direct_error or "")
    assert all(_same(data_dir(m, "d"), src) for m in machines)


def test_a_long_pull_from_a_peer_outlasts_the_channels_timeout(fleet_home, local_lease, tmp_path, monkeypatch):
    """The controller waits on the machine's channel with a timeout while the machine pulls; a pull
    longer than that (a large data set) must not read as a dead machine. Here a seed that takes ~5 s
    to serve, against a 2 s channel timeout (paramiko's channel, as `fleet up`'s pooled connection)."""
    import threading
    import time

    from fleet.snapshots import remote_peer
    from fleet.snapshots.remote_cache import Cache
    from fleet.snapshots.sync import sync_machine

    monkeypatch.setenv("FLEET_SYNC_TRANSPORT", "paramiko")
    store = open_store(None)
    src = _tree(tmp_path / "d", files=12, size=20_000)     # 12 chunks, 0.4 s each
    snap = create_snapshot(src, store)
    seed_cache = tmp_path / "seed-cache"
    c = Cache(str(seed_cache), None)
    for h in snap.manifest.chunk_ids():
        c.put(h, store.get_chunk(h))
    c.save_manifest(snap.id, zlib.compress(store.get_manifest(snap.id)))   # as the seed's own sync leaves it
    c.finish()

    class SlowCache(Cache):
        def locate(self, h):
            time.sleep(0.4)
            return Cache.locate(self, h)
    monkeypatch.setattr(remote_peer, "Cache", SlowCache)
    cert, key = sync_peers.one_off_tls()
    r, w = os.pipe()
    answers = []
    server = threading.Thread(target=remote_peer.serve_chunks, daemon=True, args=(
        {"cache": str(seed_cache), "cert": cert, "key": key, "token": "t" * 64, "bind": "127.0.0.1",
         "snapshots": [snap.id]},
        os.fdopen(r, "rb"), answers.append))
    server.start()
    try:
        for _ in range(200):
            if answers:
                break
            time.sleep(0.05)
        assert answers, "the seed never said its port"
        m = _separate_hosts(local_lease(gpus=1).machines, tmp_path / "hosts")[0]
        offer = {"host": "127.0.0.1", "port": answers[0]["port"], "cert": cert, "token": "t" * 64}
        t0 = time.monotonic()
        stats = sync_machine(m, store, _targets("d", snap.id)(m), timeout=2, peer=offer)
        assert time.monotonic() - t0 > 2.5                  # it did outlast the timeout
        assert stats.bytes_sent == 0 and stats.chunks_peer == len(snap.manifest.chunk_ids()), stats
        assert _same(data_dir(m, "d"), src)
    finally:
        os.close(w)
        server.join(10)


def test_the_other_machines_of_each_host_copy_from_its_cache_once_it_is_fed(fleet_home, local_lease, tmp_path):
    """Two hosts of two machines each: the controller feeds the first host's first machine, that host
    seeds the other host's first machine, and each host's second machine copies from its own cache:
    one copy on the controller's link, one across hosts, none for the second machines."""
    store = open_store(None)
    src = _tree(tmp_path / "d", files=10)
    snap = create_snapshot(src, store)
    total = sum(e.size for e in snap.manifest.entries if e.size)
    leased = local_lease(gpus=4).machines
    hosts = [tmp_path / "hosts" / "a", tmp_path / "hosts" / "b"]
    for d in hosts:
        d.mkdir(parents=True)
    machines = [dataclasses.replace(m, provider_ref={**m.provider_ref, "sandbox_dir": str(hosts[i // 2])})
                for i, m in enumerate(leased)]
    stats = sync_lease(machines, store, _targets("d", snap.id))
    for m in machines:
        assert _same(data_dir(m, "d"), src), m.id
    assert [s.bytes_sent for s in stats] == [total, 0, 0, 0], [s.direct_error for s in stats]
    assert [s.bytes_peer for s in stats] == [0, 0, total, 0]
