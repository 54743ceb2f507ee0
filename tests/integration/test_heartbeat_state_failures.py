"""A state database that refuses writes (disk full, locked) must not stop the heartbeat.

Found under load by the fault matrix (disk full mid-run): the heartbeat thread wrote the lease's
new deadline to the full database, the exception ended the thread with a traceback on the
terminal, and no more beats reached the machines, whose watchdogs then ended them mid-run.
"""
from __future__ import annotations

import threading
from types import SimpleNamespace

from fleet.errors import EnvironmentProblem
from fleet.heartbeat import Heartbeat
from fleet.providers.local import LocalProvider
from fleet.remote.ssh import wait_ready
from fleet.run.heartbeat_state import HeartbeatState
from tests.conftest import wait_until


class _FullDisk:
    def __init__(self):
        self.calls = 0

    def set_lease_deadline(self, lease_id, deadline, keep_until=None):
        self.calls += 1
        raise EnvironmentProblem("state database state.db: database or disk is full")


class _Budget:
    """A budget cap that reads the ledger: fine once, then the database is full."""

    def __init__(self):
        self.calls = 0

    def deadline_cap_s(self, ctx):
        self.calls += 1
        if self.calls > 1:
            raise EnvironmentProblem("state database state.db: database or disk is full")
        return 30.0


def test_the_heartbeat_outlives_a_state_database_that_refuses_writes(local_lease, monkeypatch):
    crashes: list = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashes.append(args.exc_value))
    lease = local_lease(gpus=1, deadline_s=4)
    for m in lease.machines:
        wait_ready(m, 60).close()
    warnings: list[str] = []
    state, budget = _FullDisk(), _Budget()
    ctx = SimpleNamespace(state=state, lease_id=lease.id, events=SimpleNamespace(warn=warnings.append))
    beating = HeartbeatState(ctx, lambda: budget.deadline_cap_s(ctx))
    beat = Heartbeat(lease, ttl_s=4, caps=[beating.cap], on_deadline=beating.record_deadline,
                     warn=warnings.append).start()
    try:
        # Well past the first deadline: only beats that kept coming keep the machine up.
        assert wait_until(lambda: beat.beats >= 6, 120), f"{beat.beats} beats; {crashes}"
        assert [s.state for s in LocalProvider().describe(lease)] == ["running"]
    finally:
        beat.stop()
    assert crashes == []
    assert state.calls >= 6 and budget.calls >= 6
    # One warning per kind of failure, not one per beat.
    assert len([w for w in warnings if "deadline" in w and "disk is full" in w]) == 2, warnings
    # The budget's last known cap still bounds the machines: it only counts down.
    assert beating.cap() <= 30.0
