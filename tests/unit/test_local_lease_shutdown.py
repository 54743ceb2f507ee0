"""Leasing local machines from a run in a worker thread whose main thread ended (a library caller's
script): the leasing pool took no more work ("cannot schedule new futures after interpreter
shutdown") and the lease failed before any machine was made. The machines are made all the same,
side by side, each reported as it comes up. (sshd and the watchdog are stand-ins here: what is
tested is the fan-out.)"""
from __future__ import annotations

import concurrent.futures.thread as executor_thread
import threading
from types import SimpleNamespace

from fleet.ids import new_lease_id
from fleet.plan import make_plan
from fleet.providers.local import LocalProvider, sshd


def test_machines_are_leased_side_by_side_once_the_pool_takes_no_more_work(fleet_home, monkeypatch):
    together = threading.Barrier(4, timeout=20)

    def start_sshd(d, machine_id, public):
        together.wait()
        return SimpleNamespace(port=22000, user="u", host_key="ssh-ed25519 AAAA", root=d / "root", pid=0,
                               isolation="pids")
    monkeypatch.setattr(sshd, "find_sshd", lambda: "/usr/sbin/sshd")
    monkeypatch.setattr(sshd, "start_watchdog", lambda *a, **k: 0)
    monkeypatch.setattr(sshd, "start_sshd", start_sshd)
    provider = LocalProvider()
    plan = make_plan(provider="local", template=provider.template("local-1gpu"), gpus=4, max_duration_s=600,
                     heartbeat_ttl_s=120, project="test", user="tester")
    reported = []
    monkeypatch.setattr(executor_thread, "_shutdown", True)   # what interpreter shutdown sets
    lease = provider.lease(plan, new_lease_id(), 120, on_machine=lambda m: reported.append(m.node_rank))
    assert [m.node_rank for m in lease.machines] == [0, 1, 2, 3]
    assert sorted(reported) == [0, 1, 2, 3]
