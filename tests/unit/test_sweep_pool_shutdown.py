"""A sweep run from a worker thread whose main thread ended (a library caller's script): reading each
machine's environment state beside the pool's probe was handed to a thread pool that took no more
work ("cannot schedule new futures after interpreter shutdown"), and the sweep died at its environment
capture with the machines leased. The states are read all the same, beside the probe."""
from __future__ import annotations

import concurrent.futures.thread as executor_thread
import threading
from types import SimpleNamespace

from fleet.run.machines import SSHMachines
from fleet.sweep import pool
from fleet.sweep.trial_env import BaselineState


def test_the_states_are_read_beside_the_probe_once_pools_take_no_more_work(tmp_path, monkeypatch):
    lease = SimpleNamespace(machines=[SimpleNamespace(id="m-0"), SimpleNamespace(id="m-1")])
    beside = threading.Barrier(3, timeout=20)   # both reads and the probe, at the same time

    compiled: list[str] = []

    def read_state(lease_, m):
        assert compiled == ["m-0", "m-1"]      # the states are read once the byte code is (bytecode.py)
        beside.wait()
        return BaselineState(f"state-{m.id}", f"code-{m.id}", f"site-{m.id}", f"agent-{m.id}")

    def probe(self, ctx, lease_, store, pinned):
        beside.wait()
        return None
    monkeypatch.setattr(pool, "read_state", read_state)
    monkeypatch.setattr(pool, "precompile_all", lambda ctx, lease_: compiled.extend(m.id for m in lease_.machines))
    monkeypatch.setattr(SSHMachines, "capture_environment", probe)
    monkeypatch.setattr("fleet.lease_prepare.prepare_lease", lambda ctx, lease_: None)
    machines = pool.PoolMachines(spec=None, config=None, provider=None, events=None, sweep_dir=tmp_path)
    monkeypatch.setattr(executor_thread, "_shutdown", True)   # what interpreter shutdown sets
    assert machines.capture_environment(SimpleNamespace(), lease, None, None) is None
    assert machines.environments.current == {"m-0": "state-m-0", "m-1": "state-m-1"}
    assert machines.environments.code == {"m-0": "code-m-0", "m-1": "code-m-1"}
    assert machines.environments.site == {"m-0": "site-m-0", "m-1": "site-m-1"}
    assert machines.environments.agent == {"m-0": "agent-m-0", "m-1": "agent-m-1"}
