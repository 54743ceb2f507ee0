"""The heartbeat and the controller's clocks: a controller stopped or asleep past the machines' deadline
(the deadline it records, the stall it tells apart), and its wall clock stepping under a run.

A beat that reaches no machine after their deadline passed records that deadline as it is: it used to
record "now", so the lease's deadline in the state, the reaper's tag and the meter's end of billing
crept on with every failed beat while the watchdogs had already ended the machines."""
from __future__ import annotations

from datetime import timedelta

from fleet import heartbeat as heartbeat_module
from fleet.heartbeat import Heartbeat
from fleet.models import Lease, Machine, utcnow


def _lease(deadline_in_s: float) -> Lease:
    now = utcnow()
    machine = Machine(id="L-n0", lease_id="L", node_rank=0, host="127.0.0.1", port=1, user="u", key_path="k",
                      host_key="h", workdir="/w", gpu_slots=(0,))
    return Lease(id="L", provider="p", template="t", machines=[machine], created_at=now,
                 deadline=now + timedelta(seconds=deadline_in_s), max_deadline=now + timedelta(hours=1))


def _unreachable(machine, timeout=5):
    raise OSError("machine L-n0 does not answer SSH")


def test_a_failed_beat_after_the_deadline_records_the_deadline_that_passed(monkeypatch):
    monkeypatch.setattr(heartbeat_module, "connect", _unreachable)
    lease = _lease(-30)                           # the machines' deadline passed 30 s ago
    recorded, published = [], []
    beat = Heartbeat(lease, 60, on_deadline=recorded.append, publish=published.append, warn=lambda _: None)
    beat.beat()
    beat.beat()
    assert recorded and published
    for deadline in recorded + published:
        assert abs((deadline - lease.deadline).total_seconds()) < 1, (deadline, lease.deadline)


def test_a_stall_past_the_deadline_is_told_apart_from_one_that_ended_no_machine(monkeypatch):
    """The run's message names why the machines went: this process did not run past their deadline
    (Ctrl-Z, SIGSTOP, the computer asleep), not the network or SSH, which is all the user saw before."""
    now = [1000.0]
    monkeypatch.setattr(heartbeat_module, "elapsed", lambda: now[0])
    monkeypatch.setattr(heartbeat_module, "connect", _unreachable)
    monkeypatch.setattr(heartbeat_module, "STALL_TICK_S", 3600)   # the watch has not run again since: the gap is open
    beat = Heartbeat(_lease(60), 60, warn=lambda _: None)
    beat.watch_stalls()
    try:
        assert beat.overslept_s() is None
        now[0] += 30                              # stopped for 30 s: every deadline still ahead
        assert beat.overslept_s() is None
        now[0] += 100                             # still stopped, now past the deadline (60 s after the start)
        assert beat.overslept_s() == 130
    finally:
        beat.stop()


def test_a_stall_that_falls_while_a_beat_is_under_way_is_told_apart_too(monkeypatch):
    """The process stopped after the beat reached the machine and before its answer was read: the
    machine's deadline (ttl from the beat's arrival) passed while it did not run, but the deadline
    recorded on waking (ttl from the answer) lay past the wake-up, so the run blamed SSH (seen in CI,
    a fault test stopping the controller while staging)."""
    now = [1000.0]
    monkeypatch.setattr(heartbeat_module, "elapsed", lambda: now[0])
    monkeypatch.setattr(heartbeat_module, "STALL_TICK_S", 3600)   # the watch has not run again since: the gap is open

    class Session:
        def run(self, *args, **kwargs):
            now[0] += 100                         # stopped for 100 s with this beat's answer unread

        def close(self):
            pass
    monkeypatch.setattr(heartbeat_module, "connect", lambda machine, timeout=5: Session())
    beat = Heartbeat(_lease(60), 60, warn=lambda _: None)
    beat.watch_stalls()
    try:
        beat.beat(ttl_s=20)                       # arrived at 1000: the machine ended itself at 1020
        assert beat.overslept_s() == 100
    finally:
        beat.stop()


def _wall_stepped_by(seconds: float):
    from datetime import datetime as real

    class Stepped(real):
        @classmethod
        def now(cls, tz=None):
            return real.now(tz) + timedelta(seconds=seconds)
    return Stepped


def test_the_controllers_wall_clock_stepping_neither_ends_the_machines_nor_stretches_max_duration(monkeypatch):
    """NTP or a user's `date` steps the controller's clock: stepped forward past the lease's max
    deadline, every beat extended by 0 s and healthy machines ended within one TTL; stepped back, beats
    went on past max_duration (as far as the machines' own hard maximum lets them)."""
    now = utcnow()
    machine = Machine(id="L-n0", lease_id="L", node_rank=0, host="127.0.0.1", port=1, user="u", key_path="k",
                      host_key="h", workdir="/w", gpu_slots=(0,))
    lease = Lease(id="L", provider="p", template="t", machines=[machine], created_at=now,
                  deadline=now + timedelta(seconds=60), max_deadline=now + timedelta(hours=1))
    beat = Heartbeat(lease, 60)
    monkeypatch.setattr(heartbeat_module, "datetime", _wall_stepped_by(2 * 3600))
    assert beat.next_ttl_s() == 60
    ending = Lease(id="L", provider="p", template="t", machines=[machine], created_at=now, deadline=now,
                   max_deadline=now + timedelta(seconds=30))
    monkeypatch.setattr(heartbeat_module, "datetime", _wall_stepped_by(0))
    beat = Heartbeat(ending, 60)
    monkeypatch.setattr(heartbeat_module, "datetime", _wall_stepped_by(-3600))
    assert 25 < beat.next_ttl_s() <= 30


def test_a_beat_comes_on_waking_from_a_sleep_not_a_whole_interval_later(monkeypatch):
    """The computer slept (CLOCK_MONOTONIC stood still, elapsed() went on): the beat loop's wait of a
    whole interval, begun before the sleep, ran on that long after waking, and machines whose deadline
    the sleep had brought near ended before the next beat."""
    import time
    offset = [0.0]
    monkeypatch.setattr(heartbeat_module, "elapsed", lambda: time.monotonic() + offset[0])
    extended: list[str] = []

    class Session:
        def run(self, argv, check=True, timeout=None):
            extended.append(argv[-1])

        def close(self):
            pass
    monkeypatch.setattr(heartbeat_module, "connect", lambda machine, timeout=5: Session())
    beat = Heartbeat(_lease(300), 300, warn=lambda _: None).start()   # a beat every 60 s
    try:
        time.sleep(0.5)
        offset[0] += 50                           # asleep 50 s: the next beat is due 10 s after waking
        time.sleep(1.5)
        assert extended == []
        offset[0] += 15                           # and now overdue
        end = time.monotonic() + 3
        while not extended and time.monotonic() < end:
            time.sleep(0.05)
        assert extended, "no beat within 3 s of it falling due"
    finally:
        beat.stop()
