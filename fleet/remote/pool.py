"""One SSH connection per machine for a whole run, shared by every phase as channels.

A run opens a SessionPool over its lease's machines. While it is open, `fleet.remote.ssh.connect`
for one of those machines returns a handle on the pooled connection: readiness, staging (the sync
helper), the venv, setup, every process, signals, heartbeat, telemetry and collect each open
their own channel on it instead of a TCP connection, key exchange and authentication of their
own (~0.2 s and one sshd process each). Closing a handle leaves the connection open; the pool
closes it when the run is done with the machines.

A connection that died is replaced on the next use. A machine whose sshd refuses one more
channel (OpenSSH's MaxSessions is 10 by default: 8 per-GPU processes + heartbeat + telemetry + a
signal) gets one overflow connection for the channels that do not fit.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    import paramiko

    from ..models import Machine
    from .ssh import Session

_ACTIVE: dict[str, "SessionPool"] = {}      # machine id -> the open pool holding it
_ACTIVE_LOCK = threading.Lock()


def pool_for(machine_id: str) -> "SessionPool | None":
    with _ACTIVE_LOCK:
        return _ACTIVE.get(machine_id)


class SessionPool:
    """The run's connections, one per machine (plus an overflow one where sshd caps channels)."""

    def __init__(self, machines: Iterable["Machine"]):
        self.machine_ids = [m.id for m in machines]
        self._sessions: dict[str, list[Session]] = {}
        self._locks = {mid: threading.Lock() for mid in self.machine_ids}
        self._closed = False
        self.opened = 0          # connections made, all machines together (a test asserts on it)

    # -- lifetime ------------------------------------------------------------------------------------
    def open(self) -> "SessionPool":
        """Hold the machines no open pool holds yet. A run inside another run's machines (a sweep's
        trials inside its warm pool, several at once on one machine) leaves them to the outer pool:
        its channels ride the outer connections, and closing it never cuts a neighbour's."""
        with _ACTIVE_LOCK:
            for mid in self.machine_ids:
                _ACTIVE.setdefault(mid, self)
        return self

    def close(self) -> None:
        with _ACTIVE_LOCK:
            for mid in self.machine_ids:
                if _ACTIVE.get(mid) is self:
                    del _ACTIVE[mid]
        self._closed = True
        for sessions in list(self._sessions.values()):
            for s in sessions:
                s.client.close()
        self._sessions.clear()

    def drop(self, machine_ids: Iterable[str]) -> None:
        """Close and let go of some machines' connections (they were released while the run goes
        on: a sweep's pool giving back machines it has no trial left for)."""
        with _ACTIVE_LOCK:
            for mid in machine_ids:
                if _ACTIVE.get(mid) is self:
                    del _ACTIVE[mid]
        for mid in machine_ids:
            for s in self._sessions.pop(mid, []):
                s.client.close()

    def __enter__(self) -> "SessionPool":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- use -----------------------------------------------------------------------------------------
    def session(self, machine: "Machine", timeout: float = 10) -> "Session":
        """A handle on the machine's pooled connection, connecting (or reconnecting) when needed."""
        from .ssh import PooledSession
        conn = self.primary(machine, timeout)
        return PooledSession(self, machine, conn.client)

    def primary(self, machine: "Machine", timeout: float = 10) -> "Session":
        """The machine's live pooled connection (a new one when there is none or it died)."""
        with self._locks.setdefault(machine.id, threading.Lock()):
            live = self._live(machine.id)
            if not live:
                live = [self._connect(machine, timeout)]
            self._sessions[machine.id] = live
            return live[0]

    def overflow(self, machine: "Machine", full: list["paramiko.SSHClient"]) -> "Session":
        """A connection other than those in `full` (whose sshd refused one more channel)."""
        with self._locks.setdefault(machine.id, threading.Lock()):
            live = self._live(machine.id)
            spare = [s for s in live if s.client not in full]
            if spare:
                return spare[0]
            conn = self._connect(machine, 10)
            self._sessions[machine.id] = live + [conn]
            return conn

    def _live(self, machine_id: str) -> list["Session"]:
        live = []
        for s in self._sessions.get(machine_id, []):
            if s.active:
                live.append(s)
            else:
                s.client.close()
        return live

    def _connect(self, machine: "Machine", timeout: float) -> "Session":
        from ..errors import MachineUnreachable
        from .ssh import open_connection
        if self._closed:
            raise MachineUnreachable(f"machine {machine.id}: the run is done with its connections")
        conn = open_connection(machine, timeout)
        self.opened += 1
        return conn
