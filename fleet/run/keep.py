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


def extend_lease(state, lease: Lease, seconds: int, provider=None) -> None:
    """Every machine's deadline to now + `seconds` (never past max_deadline, never earlier than a
    machine already holds it). Where the provider keeps its own hard end (Slurm's time limit:
    `HasHardLimit`), that is raised first, and the machines never get more than it granted; a
    refusal raises before any machine is touched."""
    from ..remote.ssh import connect
    limit = (lease.max_deadline - utcnow()).total_seconds()
    ttl = max(0.0, min(float(seconds), limit))
    if provider is None:
        from ..providers import get_provider
        try:
            provider = get_provider(lease.provider)
        except FleetError:
            provider = None       # not installed here: the machines' own deadlines still move
    from ..providers.base import HasHardLimit
    if isinstance(provider, HasHardLimit):
        hard_end = provider.extend_limit(lease, utcnow() + timedelta(seconds=ttl))
        ttl = max(0.0, min(ttl, (hard_end - utcnow()).total_seconds()))
    held: list[float] = []

    def one(m: Machine) -> None:
        with connect(m, timeout=10) as s:
            out = s.run([m.python, m.agent_path, "extend", "--state-dir", m.state_dir, "--ttl", f"{ttl:.3f}"])
        held.append(_remaining_s(out.stdout, ttl))

    parallel(lease.machines, one)
    # What every machine holds now: the agent keeps a later deadline it was already given.
    until = utcnow() + timedelta(seconds=min(held, default=ttl))
    state.set_lease_deadline(lease.id, until, keep_until=until)
    from ..heartbeat import publish_once
    problem = publish_once(lease, until, provider)     # e.g. AWS: the reaper's fleet:deadline tag
    if problem:
        import logging
        logging.getLogger("fleet").warning(problem)


def _remaining_s(agent_output: str, asked: float) -> float:
    """The agent's answer to `extend` ({"remaining_s": …}); what was asked where it said nothing."""
    import json
    try:
        return float(json.loads(agent_output.strip().splitlines()[-1])["remaining_s"])
    except (ValueError, KeyError, IndexError, TypeError):
        return asked
