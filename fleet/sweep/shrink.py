"""Giving back pool machines that have no trial left to run while the sweep's last trials run.

Five trials on four machines run the fifth on one machine; the other three would sit idle until
it ends, billed all the while. The scheduler (fleet/sweep/scheduler.py) hands a machine here once
none of its slots has a trial to run (the queue is empty, or the trials left have waited on the
budget for `idle_release`) while a trial still runs elsewhere (otherwise the pool's own release
follows at once). Then, in this order:

1. the heartbeat stops beating it and never counts it lost (its end is not a failure), and its
   pooled SSH connection is closed;
2. the provider ends it (`ReleasesMachines.release_machines`). A provider without that capability
   keeps it until the pool's release, said once. A release that fails is one warning line, and the
   machine stays billed until the sweep ends; where the provider gave back some of the machines
   (its error's `released`: a Slurm batch host stays in the job, the node released with it does
   not), those are released as below;
3. its ledger segment closes now: it is billed up to its release, no further;
4. it leaves the lease in the state (`fleet status` counts what is still up; the lease's meta keeps
   when it went) and the run's own lease (the pool's final release, a kept hand-over).
"""
from __future__ import annotations

import threading

from ..models import to_jsonable, utcnow
from ..run.context import Events, RunContext


class PoolShrink:
    def __init__(self, provider, events: Events):
        self.provider, self.events = provider, events
        self.released: dict[str, str] = {}        # machine id → when it was released (ISO, UTC)
        self.lock = threading.Lock()               # one partial release at a time
        self._said_cannot = False
        self._leaving: set[str] = set()           # machines a release_soon is giving back now
        self._leaving_lock = threading.Lock()      # not `lock`: that one is held through a release
        self._threads: list[threading.Thread] = []

    def release_soon(self, ctx: RunContext, machine_ids: list[str], why: str) -> None:
        """`release` on a thread of its own: the slot that retired need not wait for the provider
        (a local machine's watchdog takes up to half a second to end it), so the sweep's last trial
        ending meanwhile is not held up; the pool's own release joins it (`join`)."""
        with self._leaving_lock:
            self._leaving.update(machine_ids)

        def run() -> None:
            try:
                self.release(ctx, machine_ids, why)
            finally:
                with self._leaving_lock:
                    self._leaving.difference_update(machine_ids)
        thread = threading.Thread(target=run, name="sweep-shrink", daemon=True)
        self._threads.append(thread)
        thread.start()

    def leaving(self) -> set[str]:
        """Machines being given back right now (their release started, not finished)."""
        with self._leaving_lock:
            return set(self._leaving)

    def join(self) -> None:
        for thread in list(self._threads):
            thread.join()

    def release(self, ctx: RunContext, machine_ids: list[str], why: str) -> list[str]:
        """Release those machines of the pool's lease now; returns the ids released."""
        from ..providers.base import ReleasesMachines
        lease = ctx.lease
        with self.lock:
            ids = [m.id for m in lease.machines if m.id in set(machine_ids) and m.id not in self.released]
            if not ids:
                return []
            if not isinstance(self.provider, ReleasesMachines):
                if not self._said_cannot:
                    self._said_cannot = True
                    self.events.phase("release", f"{why}, but the {self.provider.name} provider cannot release "
                                                 "part of a lease: they stay until the sweep ends")
                return []
            if ctx.heartbeat is not None:
                ctx.heartbeat.forget(set(ids))
            from ..remote.pool import pool_for
            pools = {id(p): p for p in (pool_for(mid) for mid in ids) if p is not None}
            for pool in pools.values():
                pool.drop(ids)
            try:
                self.provider.release_machines(lease, ids)
            except Exception as exc:  # noqa: BLE001 — without beats their watchdog ends them within one TTL
                gone = set(getattr(exc, "released", ()) or ())     # a provider that gave back some of them
                kept = [m for m in ids if m not in gone]
                self.events.warn(f"could not release idle machine(s) {', '.join(kept)} ({_one_line(exc)}); "
                                 "billed until the sweep ends")
                ids = [m for m in ids if m in gone]
                if not ids:
                    return []
            at = utcnow()
            if ctx.budget is not None:
                ctx.budget.close_machines(set(ids))
            try:
                ctx.state.release_machines(lease.id, ids, at)
            except Exception as exc:  # noqa: BLE001 — the machines are gone and no longer billed either way
                self.events.warn(f"could not record the release of {', '.join(ids)}: {exc}")
            # A new list, never changed in place: the heartbeat may be iterating the old one.
            ctx.lease.machines = [m for m in lease.machines if m.id not in set(ids)]
            for mid in ids:
                self.released[mid] = to_jsonable(at)
            # The pool run's summary and record still count them: leased and billed by this run.
            ctx.released_early = dict(self.released)
        self.events.phase("release", f"{why}: released {len(ids)} machine(s) ({', '.join(ids)}); "
                                     f"{len(ctx.lease.machines)} still up")
        return ids


def _one_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
