"""The controller's half of the dead-man switch: keep extending each machine's own deadline.

Each beat asks the machine's agent to move its deadline to now+TTL *by the machine's clock*, so
skew between controller and machine never matters. The TTL is capped by max_duration and by any
cap a hook supplies (the budget's exhaustion time). If the controller dies, beats stop and every
machine ends itself within one TTL.
"""
from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Callable

from .clock import elapsed
from .models import Lease, Machine
from .remote.ssh import Session, connect

CapFn = Callable[[], "float | None"]   # seconds from now the lease may still live, or None for no cap
STALL_TICK_S = 0.5     # the stall watch's tick
BEAT_POLL_S = 1.0      # the beat loop looks this often whether a beat is due
STALL_S = 5.0          # a tick this late: the process was stopped or asleep, not merely slow under load


class Heartbeat:
    def __init__(self, lease: Lease, ttl_s: float, *, caps: list[CapFn] | None = None,
                 on_deadline: Callable[[datetime], None] | None = None, warn: Callable[[str], None] | None = None,
                 publish: Callable[[datetime], None] | None = None):
        self.lease = lease
        self.ttl_s = float(ttl_s)
        self.caps = caps or []
        self.on_deadline = on_deadline
        # Where the provider keeps the deadline for its reaper (AWS: a fleet:deadline tag, one
        # CreateTags for the whole lease per beat); see deadline_publisher.
        self.publish = publish
        self._warn_to = warn
        self._stop = threading.Event()
        self._sessions: dict[str, Session] = {}
        self._thread = threading.Thread(target=self._loop, name="fleet-heartbeat", daemon=True)
        self.beats = 0
        # Per machine: the latest moment (elapsed()) its own deadline can be, as far as we know.
        # A machine past it has ended itself; the run stops waiting for it (see lost()).
        first = (lease.deadline - datetime.now(timezone.utc)).total_seconds()
        self._alive_until = {m.id: elapsed() + first for m in lease.machines}
        # ... and the earliest it can be: ttl from when the last confirmed beat was sent. A stop that
        # fell while a beat was under way puts the upper bound past the wake-up, far from the real
        # deadline, which passed while this process was not running (see overslept_s).
        self._alive_from = dict(self._alive_until)
        # Seconds this process did not run (stopped: Ctrl-Z, SIGSTOP, a debugger; or the computer slept)
        # while a machine's deadline passed unextended: why the machines are gone, for the run's message.
        self._gaps: list[tuple[float, float]] = []   # (from, to) elapsed(): when this process did not run
        self._ran_at: float | None = None              # elapsed() at the stall watch's last tick
        self._max_anchor: tuple[datetime, float] | None = None   # see _max_left_s
        self._max_left_s()
        self._in_flight: set[str] = set()
        self._forgotten: set[str] = set()   # released while the lease lives on (forget)
        self._held = False                  # the scheduler keeps the machines stopped (hold)
        self._lock = threading.Lock()

    def warn(self, message: str) -> None:
        """Tell the user, from the beat's threads: a sink that raises (a closed terminal, a caller's
        own events) must not end the beats, or every machine would end itself at its deadline."""
        if self._warn_to is None:
            return
        try:
            self._warn_to(message)
        except Exception:  # noqa: BLE001 — nowhere to report it from a background thread
            pass

    @property
    def interval_s(self) -> float:
        return max(0.5, min(60.0, self.ttl_s / 3))

    def _max_left_s(self) -> float:
        """Seconds to the lease's max deadline, counted on elapsed() from when it was first read: the
        controller's wall clock stepping forward (NTP, a user's `date`) must not read as max_duration
        spent and let healthy machines end, nor a step back stretch it."""
        if self._max_anchor is None or self._max_anchor[0] != self.lease.max_deadline:
            left = (self.lease.max_deadline - datetime.now(timezone.utc)).total_seconds()
            self._max_anchor = (self.lease.max_deadline, elapsed() + left)
        return self._max_anchor[1] - elapsed()

    def next_ttl_s(self) -> float:
        ttl = min(self.ttl_s, self._max_left_s())
        for cap in self.caps:
            value = cap()
            if value is not None:
                ttl = min(ttl, value)
        return max(0.0, ttl)

    def start(self) -> "Heartbeat":
        self._thread.start()
        return self

    def beat(self, ttl_s: float | None = None) -> None:
        """Extend every machine's deadline, one thread per machine: a machine whose network is gone
        hangs its beat for the SSH timeouts (tens of seconds), and beating machines one after the
        other let that starve every healthy machine of its beats until its watchdog ended it
        (found by the fault matrix: one cut link ended a whole lease)."""
        ttl = self.next_ttl_s() if ttl_s is None else ttl_s
        threads = []
        for i, machine in enumerate(self.lease.machines):
            with self._lock:
                if machine.id in self._in_flight or machine.id in self._forgotten:
                    continue   # its previous beat still hangs; that machine ends at its deadline
                self._in_flight.add(machine.id)
            if ttl_s is None and i:
                ttl = self.next_ttl_s()   # per machine: a slow beat over many machines must not overshoot a cap
            t = threading.Thread(target=self._extend, args=(machine, ttl), daemon=True,
                                 name=f"fleet-beat-{machine.id}")
            t.start()
            threads.append(t)
        end = time.monotonic() + self.interval_s   # a hung machine must not delay the next beat
        for t in threads:
            t.join(max(0.0, end - time.monotonic()))
        self.beats += 1
        # Record what the machines actually hold: the latest deadline a beat confirmed. A beat
        # that reached no machine changes nothing, so state never promises more than the machines.
        with self._lock:
            latest = max(self._alive_until.values(), default=None)
        if latest is not None and (self.on_deadline or self.publish):
            # Already past when no beat got through since (the controller was stopped or asleep, the
            # machines cut off): recorded as it is, not as "now", which moved on with every failed beat.
            deadline = datetime.now(timezone.utc) + timedelta(seconds=latest - elapsed())
            if self.on_deadline:
                self.on_deadline(deadline)
            if self.publish:
                try:
                    self.publish(deadline)
                except Exception as exc:  # noqa: BLE001 — the machines hold their own deadline anyway
                    self.warn(f"could not publish lease {self.lease.id}'s deadline for the reaper: {exc}")

    def lost(self, slack_s: float = 3.0) -> set[str]:
        """Machines certainly past their own deadline (beats could not reach them): their watchdog
        has ended them, so nothing they run will report back."""
        now = elapsed()
        with self._lock:
            if self._held:
                return set()
            alive = list(self._alive_until.items())
        return {mid for mid, until in alive if now > until + slack_s}

    def hold(self, held: bool) -> None:
        """The scheduler stopped the lease's machines and keeps them (a Slurm suspension): no beat
        reaches them, but their watchdogs are stopped with them and at resume give this controller one
        TTL to beat again (agent/wakes.py). Not lost meanwhile, nor at once after the resume."""
        with self._lock:
            self._held = held
            if not held:
                until = elapsed() + max(0.0, min(self.ttl_s, self._max_left_s()))
                for mid, was in self._alive_until.items():
                    self._alive_until[mid] = max(was, until)

    def forget(self, machine_ids: set[str]) -> None:
        """Machines released while the lease lives on: no more beats to them, and they never count
        as lost (their deadline passing is their release, not a failure)."""
        with self._lock:
            self._forgotten |= set(machine_ids)
            for mid in machine_ids:
                self._alive_until.pop(mid, None)
                self._alive_from.pop(mid, None)
                session = self._sessions.pop(mid, None)
                if session is not None:
                    session.close()

    def _is_forgotten(self, machine_id: str) -> bool:
        with self._lock:
            return machine_id in self._forgotten

    def _extend(self, machine: Machine, ttl: float) -> None:
        try:
            for attempt in (1, 2):
                if self._is_forgotten(machine.id):
                    return   # released while this beat was under way: nothing to extend or warn about
                try:
                    sent = elapsed()
                    session = self._sessions.get(machine.id)
                    if session is None:
                        session = self._sessions[machine.id] = connect(machine, timeout=5)
                    session.run([machine.python, "-S", machine.agent_path, "extend", "--state-dir", machine.state_dir,
                                 "--ttl", f"{ttl:.3f}"], check=True, timeout=15)
                    # Upper bound of the machine's new deadline: it counts ttl from when the beat
                    # arrived, which is no later than now; the agent never moves a deadline earlier.
                    with self._lock:
                        if machine.id not in self._forgotten:
                            self._alive_until[machine.id] = max(self._alive_until.get(machine.id, 0.0),
                                                                elapsed() + ttl)
                            self._alive_from[machine.id] = max(self._alive_from.get(machine.id, 0.0), sent + ttl)
                    return
                except Exception as exc:  # noqa: BLE001 — a missed beat is survivable; warn and retry next time
                    stale = self._sessions.pop(machine.id, None)
                    if stale:
                        stale.close()
                    if attempt == 2 and not self._stop.is_set() and not self._is_forgotten(machine.id):
                        self.warn(f"heartbeat to {machine.id} failed: {exc}")
        finally:
            with self._lock:
                self._in_flight.discard(machine.id)

    def _loop(self) -> None:
        # Waits measure CLOCK_MONOTONIC, which stops while the computer sleeps: a wait of a whole interval
        # begun before a sleep went on that long after waking, and machines whose deadline the sleep had
        # brought near ended meanwhile. Short waits, the beat due by elapsed().
        due = elapsed() + self.interval_s
        while not self._stop.wait(max(0.0, min(BEAT_POLL_S, due - elapsed()))):
            if elapsed() < due:
                continue
            try:
                self.beat()
            except Exception as exc:  # noqa: BLE001 — e.g. on_deadline's state write in an outage: beat on
                self.warn(f"heartbeat of lease {self.lease.id}: {exc}")
            due = elapsed() + self.interval_s

    def watch_stalls(self) -> "Heartbeat":
        """Start noting when this whole process stops running (Ctrl-Z, SIGSTOP, a debugger, the computer
        asleep): a thread that ticks every STALL_TICK_S sees the gap when it runs again."""
        self._ran_at = elapsed()
        threading.Thread(target=self._watch, name="fleet-stall-watch", daemon=True).start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(STALL_TICK_S):
            now = elapsed()
            if now - self._ran_at > STALL_S:
                with self._lock:
                    self._gaps.append((self._ran_at, now))
            self._ran_at = now

    def overslept_s(self) -> float | None:
        """How long this process was not running while a machine's deadline passed unextended, which
        ended that machine (None: it never was). The gap still open counts: the run may end on it before
        the watch, continued, has ticked."""
        if self._ran_at is None:
            return None
        now = elapsed()
        with self._lock:
            still = now - self._ran_at > STALL_S and not self._stop.is_set()
            gaps = self._gaps + ([(self._ran_at, now)] if still else [])
            untils = list(self._alive_from.values())
        passed = [b - a for a, b in gaps if any(a < until <= b for until in untils)]
        return max(passed) if passed else None

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=20)
        for session in list(self._sessions.values()):
            session.close()
        self._sessions.clear()


def deadline_publisher(provider, lease: Lease) -> Callable[[datetime], None] | None:
    """`publish_deadline(lease, deadline)` of a provider that has the PublishesDeadline capability,
    bound to this lease: keeps the deadline where the provider's reaper reads it, so a dead
    controller's machines are ended at the deadline even where nothing on the machine ends them."""
    from .providers.base import PublishesDeadline
    if not isinstance(provider, PublishesDeadline):
        return None
    return lambda deadline: provider.publish_deadline(lease, deadline)


def publish_once(lease: Lease, deadline: datetime, provider=None) -> str | None:
    """For a one-off extension (--keep, `fleet extend`): publish the new deadline; a warning line
    when that failed (the reaper would end the kept machines at the old deadline), else None."""
    try:
        if provider is None:
            from .providers import get_provider
            provider = get_provider(lease.provider)
        publish = deadline_publisher(provider, lease)
        if publish is not None:
            publish(deadline)
    except Exception as exc:  # noqa: BLE001 — reported to the caller as one line
        return f"could not publish lease {lease.id}'s new deadline for the reaper: {exc}"
    return None
