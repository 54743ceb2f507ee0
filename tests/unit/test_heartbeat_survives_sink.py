"""The beats go on whatever the user's side raises: a warning sink that raises (a closed terminal, a
library caller's own events) or a deadline record that fails (a state outage) used to end the
heartbeat thread for good, so every machine ended itself at its deadline in the middle of the run."""
from __future__ import annotations

import time
from datetime import timedelta

from fleet import heartbeat as heartbeat_module
from fleet.heartbeat import Heartbeat
from fleet.models import Lease, Machine, utcnow


def _lease() -> Lease:
    now = utcnow()
    machine = Machine(id="L-n0", lease_id="L", node_rank=0, host="127.0.0.1", port=1, user="u", key_path="k",
                      host_key="h", workdir="/w", gpu_slots=(0,))
    return Lease(id="L", provider="p", template="t", machines=[machine], created_at=now,
                 deadline=now + timedelta(minutes=5), max_deadline=now + timedelta(hours=1))


class Session:
    def __init__(self, extended):
        self.extended = extended

    def run(self, argv, check=True, timeout=None):
        self.extended.append(argv[-1])

    def close(self):
        pass


def _broken(*args):
    raise OSError("the sink is gone")


def test_a_raising_sink_and_a_failing_deadline_record_do_not_stop_the_beats(monkeypatch):
    extended: list[str] = []
    monkeypatch.setattr(heartbeat_module, "connect", lambda machine, timeout=5: Session(extended))
    beat = Heartbeat(_lease(), 1.5, warn=_broken, on_deadline=_broken, publish=_broken)   # a beat every 0.5 s
    beat.start()
    try:
        end = time.monotonic() + 10
        while len(extended) < 4 and time.monotonic() < end:
            time.sleep(0.05)
        assert len(extended) >= 4 and beat._thread.is_alive(), extended
    finally:
        beat.stop()
