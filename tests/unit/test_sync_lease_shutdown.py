"""Staging a lease from a run in a worker thread whose main thread ended (a library caller's script):
the per-machine sync pool and the seed dialler took no more work ("cannot schedule new futures
after interpreter shutdown") and staging died before any machine was fed. The machines are fed
all the same, still side by side, the first host's seed dialled while it is fed."""
from __future__ import annotations

import concurrent.futures.thread as executor_thread
import threading

import pytest

from fleet.models import Machine
from fleet.snapshots import sync, sync_peers


class Store:
    parallel = 4
    url = "file:///store"


def machine(i: int) -> Machine:
    return Machine(id=f"l-1-n{i}", lease_id="l-1", node_rank=i, host=f"10.0.0.{i + 1}", port=22, user="u",
                   key_path="/k", host_key="ssh-ed25519 AAAA", workdir=f"/w/l-1/l-1-n{i}")


class Dial:
    def __init__(self, m, cache_dir):
        self.machine = m


@pytest.mark.parametrize("seeding", [False, True])
def test_every_machine_is_fed_side_by_side_once_pools_take_no_more_work(fleet_home, monkeypatch, seeding):
    machines = [machine(i) for i in range(3)]
    together = threading.Barrier(3 if not seeding else 1, timeout=20)   # seeding: the first host alone first
    fed, seeds = [], []

    def sync_machine(m, store, targets, **kwargs):
        together.wait()
        fed.append(m.id)
        return sync.SyncStats(machine_id=m.id)

    def relay(first, results, peers, others, wanted, feed, *args, **kwargs):
        seeds.append(first.machine.id)
        feed(peers + others)
        return set()
    monkeypatch.setattr(sync, "sync_machine", sync_machine)
    monkeypatch.setenv("FLEET_SYNC_PEERS", "1" if seeding else "0")
    monkeypatch.setattr(sync_peers, "SeedDial", Dial)
    monkeypatch.setattr(sync_peers, "relay", relay)
    monkeypatch.setattr(executor_thread, "_shutdown", True)   # what interpreter shutdown sets
    stats = sync.sync_lease(machines, Store(), lambda m: [sync.Target(dest="/w/code", ids=["a" * 64])])
    assert [s.machine_id for s in stats] == [m.id for m in machines]
    assert sorted(fed) == [m.id for m in machines]
    assert seeds == (["l-1-n0"] if seeding else [])
