"""A machine the sweep gives back while a beat to it is in flight (fleet/sweep/shrink.py forgets it,
closes its session, then the provider ends it): the beat that was under way must end quietly. It
used to retry on a fresh connection to the machine being destroyed (on AWS a connect timeout per
machine), keep that connection in the heartbeat for ever, and print 'heartbeat to L-n1 failed'
for a machine fleet released on purpose."""
from __future__ import annotations

import threading
from datetime import timedelta

from fleet import heartbeat as heartbeat_module
from fleet.heartbeat import Heartbeat
from fleet.models import Lease, Machine, utcnow


def _lease() -> Lease:
    now = utcnow()
    machines = [Machine(id=f"L-n{i}", lease_id="L", node_rank=i, host="127.0.0.1", port=1, user="u",
                        key_path="k", host_key="h", workdir="/w", gpu_slots=(0,)) for i in range(2)]
    return Lease(id="L", provider="p", template="t", machines=machines, created_at=now,
                 deadline=now + timedelta(minutes=5), max_deadline=now + timedelta(hours=1))


class Session:
    """The first run on L-n1 hangs until its session is closed (the machine is being released)."""

    def __init__(self, machine, opened):
        self.machine, self.closed = machine, threading.Event()
        opened.append(machine.id)

    def run(self, argv, check=True, timeout=None):
        if self.machine.id == "L-n1":
            running.set()
            self.closed.wait(10)
            raise ConnectionError("channel closed")

    def close(self):
        self.closed.set()


running = threading.Event()


def test_a_beat_in_flight_to_a_machine_being_released_ends_quietly(monkeypatch):
    opened, warnings = [], []
    monkeypatch.setattr(heartbeat_module, "connect", lambda machine, timeout=5: Session(machine, opened))
    running.clear()
    beat = Heartbeat(_lease(), 60, warn=warnings.append)
    worker = threading.Thread(target=beat._extend, args=(beat.lease.machines[1], 60.0))
    worker.start()
    assert running.wait(10)
    beat.forget({"L-n1"})            # the sweep gives L-n1 back now
    worker.join(15)
    assert not worker.is_alive()
    assert opened == ["L-n1"]        # no second connection to the machine being destroyed
    assert "L-n1" not in beat._sessions
    assert warnings == []
    beat.stop()
