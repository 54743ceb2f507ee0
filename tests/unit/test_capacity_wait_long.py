"""A long capacity wait on AWS (`fleet up --wait 2d` for scarce GPUs, fleet/providers/aws/capacity.py):
the back-off is capped at a minute, so round 1,025 comes after about 17 hours. Its pause was
computed as 5 s * 2**rounds before the cap, and 2**1024 does not fit a float: the wait ended in
'internal error: OverflowError' instead of waiting on (or ending as a wait that ran out, exit 10)."""
from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from fleet.errors import CapacityError
from fleet.providers.aws import capacity
from fleet.providers.base import LeaseWatch


class Clock:
    def __init__(self):
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


class ClockedCancel:
    """watch.cancel: its wait advances the fake clock instead of sleeping."""

    def __init__(self, clock):
        self.clock, self.event = clock, threading.Event()

    def wait(self, seconds):
        self.clock.now += seconds
        return False

    def is_set(self):
        return False


class Queue:
    def __init__(self, db):
        pass

    def join(self, **kw):
        pass

    def touch(self, *a, **kw):
        pass

    def leave(self, *a):
        pass


def test_a_wait_of_two_days_survives_its_thousandth_round(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(capacity.time, "monotonic", clock.monotonic)
    monkeypatch.setattr("fleet.providers.ssh.queue.WaitQueue", Queue)
    rounds = []

    def try_launch(on_attempt):
        rounds.append(clock.now)
        if len(rounds) < 1100:
            on_attempt(None, "InsufficientInstanceCapacity")
            raise CapacityError("no capacity")
        return "launched"

    plan = SimpleNamespace(instance_type="p5.48xlarge", template=SimpleNamespace(name="t"), user="u", project="p",
                           gpus=8, machine_count=1)
    watch = LeaseWatch(cancel=ClockedCancel(clock), max_wait_s=2 * 86400)
    assert capacity.launch_waiting(try_launch, watch, lease_id="L", plan=plan, region="us-east-1",
                                   open_db=lambda: None) == "launched"
    assert len(rounds) == 1100 and rounds[-1] - rounds[-2] == pytest.approx(capacity.BACKOFF_CAP_S)
