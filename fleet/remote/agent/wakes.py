"""The watchdog's account of the times it did not run (stdlib only; shipped beside agent.py, or
embedded in it: agent_source()).

Slurm stops every process of a job it suspends (`scontrol suspend`, gang scheduling), the watchdog
and the node's sshd among them, and keeps the job's nodes to resume it. The controller's heartbeats
cannot reach a stopped machine, so a suspension longer than the heartbeat TTL left the deadline passed
at resume, and the watchdog ended at once a machine whose job Slurm had kept and whose controller was
still beating. The watchdog knows it did not run by a gap between two of its polls far longer than a
poll, on CLOCK_BOOTTIME (which counts the stop, and a suspend of the whole machine too). After one, a
passed deadline waits one heartbeat window from the wake-up: a live controller's next beat extends
it, and with no controller the machine still ends by then. The hard maximum is not the business of
this module: the watchdog holds it whatever happened.
"""
from __future__ import annotations

STOPPED_S = 5.0   # a poll this late: the process was stopped (or the machine slept), not merely slow


class Wakes:
    def __init__(self, grace_s, at):
        """`grace_s`: the window a controller gets after a wake-up to beat again (the watchdog's TTL);
        `at`: the boot clock when the watchdog started."""
        self.grace_s = max(0.0, float(grace_s))
        self.last = at
        self.grace_until = -float("inf")

    def passed(self, at, deadline):
        """Whether the heartbeat deadline counts as passed at `at` (the boot clock, read once per poll)."""
        if at - self.last > STOPPED_S:
            self.grace_until = at + self.grace_s
        self.last = at
        return at >= deadline and at >= self.grace_until
