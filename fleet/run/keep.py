"""After a run: release the lease, or keep it up (`--keep`) and extend it later (`fleet extend`)."""
from __future__ import annotations

from datetime import timedelta

from ..errors import FleetError
from ..models import Lease, Machine, to_jsonable, utcnow
from ..parallel import parallel
from .context import Events

# --keep is for looking at machines after a run ended on its own (failed ones above all); a
# cancelled, budget-stopped or broken run releases as if --keep had not been given.
KEEPABLE = ("succeeded", "failed", "setup-failed")


def release_lease(provider, state, lease_id: str, lease: Lease | None, events: Events) -> bool:
    try:
        if lease is not None:
            provider.release(lease)
        state.set_lease_status(lease_id, "released")
        return True
    except Exception as exc:  # noqa: BLE001 — the watchdog still ends the machines; say so
        events.warn(f"release of {lease_id} failed ({exc}); machines end at their deadline; "
                    "run `fleet down --all` to retry")
        return False


def try_keep(state, lease: Lease, keep_s: int, events: Events) -> str | None:
    """Keep the lease up for keep_s; the ISO time it is kept until, or None when that failed."""
    try:
        keep_lease(state, lease, keep_s, events)
    except FleetError as exc:
        events.warn(f"could not keep lease {lease.id} ({exc.one_line()}); releasing it")
        return None
    return to_jsonable(utcnow() + timedelta(seconds=keep_s))


def keep_lease(state, lease: Lease, keep_s: int, events: Events) -> None:
    """Leave the lease up for keep_s: its machines now hold a deadline keep_s away, no heartbeat needed."""
    extend_lease(state, lease, keep_s)
    events.phase("keep", f"lease {lease.id} kept for {keep_s}s: `fleet down {lease.id}` to release")


def extend_lease(state, lease: Lease, seconds: int) -> None:
    from ..remote.ssh import connect
    limit = (lease.max_deadline - utcnow()).total_seconds()
    ttl = max(0.0, min(float(seconds), limit))

    def one(m: Machine) -> None:
        with connect(m, timeout=10) as s:
            s.run([m.python, m.agent_path, "extend", "--state-dir", m.state_dir, "--ttl", f"{ttl:.3f}"])

    parallel(lease.machines, one)
    until = utcnow() + timedelta(seconds=ttl)
    state.set_lease_deadline(lease.id, until, keep_until=until)
    from ..heartbeat import publish_once
    problem = publish_once(lease, until)     # e.g. AWS: the reaper's fleet:deadline tag
    if problem:
        import logging
        logging.getLogger("fleet").warning(problem)
