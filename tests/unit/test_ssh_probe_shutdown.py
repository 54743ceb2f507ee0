"""Probing team hosts from a run in a worker thread whose main thread ended (a library caller's
script): the probe pool took no more work ("cannot schedule new futures after interpreter
shutdown"). Every host is probed all the same, side by side, each answer under its host's name."""
from __future__ import annotations

import concurrent.futures.thread as executor_thread
import threading

from fleet.providers.ssh import hosts


def test_every_host_is_probed_once_the_pool_takes_no_more_work(monkeypatch):
    together = threading.Barrier(3, timeout=20)

    def probe(host, timeout):
        together.wait()
        return f"probed {host.address}"
    monkeypatch.setattr(hosts, "probe", probe)
    monkeypatch.setattr(executor_thread, "_shutdown", True)   # what interpreter shutdown sets
    found = hosts.probe_all([hosts.Host(name=f"h{i}", address=f"10.0.0.{i}") for i in range(3)])
    assert found == {f"h{i}": f"probed 10.0.0.{i}" for i in range(3)}
