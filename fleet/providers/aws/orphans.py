"""`fleet reap` from a laptop: the reaper's rules (reap.py, also run by the stack's Lambda) judged
against this state store's live leases, so an instance of no live lease goes too, not only an
expired one. Without --all-users only the caller's instances are judged by lease.

A live lease whose instances it ends (heartbeat deadline passed, or expired: no controller extends
it) is then released as `fleet down` releases it: the ledger closed from what AWS reports, and its
runs whose controller is gone ended as `lost` with a run record saying why and what was billed.
The Lambda cannot do that part (it holds no state); `fleet reap` and `fleet down` do.

A live lease whose detached run's supervisor is silent (node 0 vanished, or the supervisor died
there) is released too, before its deadline: nothing supervises or extends it any more. Its run,
ended `lost`, is then resumed as its next attempt when its own settings allow it (recovery,
max_restarts, the budget left), supervised from node 0 of a new lease; else it stays lost and one
line says why (fleet/run/lost_resume.py). --dry-run says what would happen and does nothing."""
from __future__ import annotations

from typing import Any


def live_lease_ids(state) -> set[str]:
    return {lease.id for lease in state.list_leases(active_only=False) if lease.status in ("leasing", "active")}


def reap_orphans(config, *, dry_run: bool = False, all_users: bool = False,
                 events=None) -> tuple[str, list[dict[str, Any]], list[str], list]:
    """(region, one action per instance judged, live leases released because their instances
    were reaped or their run's supervisor is silent (with --dry-run: those it would release),
    what became of each such run (`LostRunResume`)); `config` may be None (no fleet.toml here)."""
    from ...plan import current_user
    from ...state import open_state
    from .provider import AWSProvider
    from .reap import reap
    from .session import translate
    state = open_state(config.state_url if config is not None else None)
    try:
        provider = AWSProvider(config)
        caller = current_user(config.user if config is not None else None)
        owner = None if all_users else caller
        silent = _silent_runs(state, owner)
        unsupervised = sorted({r["lease_id"] for r in silent}) if dry_run else _release_unsupervised(state, silent, events)
        from ...run.lost_resume import resume_lost_runs
        ended = silent if dry_run else [r for r in silent if state.get_run(r["id"])["status"] == "lost"]
        resumed = resume_lost_runs(state, ended, caller=caller, dry_run=dry_run, events=events,
                                   state_url=config.state_url if config is not None else None)
        live = live_lease_ids(state)
        try:
            actions = reap(provider.ec2, live, dry_run=dry_run, owner=owner)
        except Exception as exc:  # noqa: BLE001 — AWS errors become one line
            raise translate(exc, "reaping fleet instances") from None
        released = unsupervised + ([] if dry_run else _release_reaped(state, actions, live, events))
        return provider.outputs.region, actions, released, resumed
    finally:
        state.close()


def _silent_runs(state, owner: str | None) -> list[dict[str, Any]]:
    """The runs of live AWS leases (the reaper judges AWS's only) whose detached supervisor is
    silent (node 0 vanished with it, or it died there), one per lease."""
    import json
    from ...run.supervisor_beat import supervisor_gone
    leases = {lease.id: lease for lease in state.list_leases(active_only=True)
              if lease.provider == "aws" and lease.status in ("leasing", "active")
              and (owner is None or lease.user == owner)}
    found: dict[str, dict[str, Any]] = {}
    for run in state.db.execute("SELECT * FROM runs WHERE status = 'running' ORDER BY started_at"):
        if run.get("lease_id") not in leases or run["lease_id"] in found:
            continue
        run["meta"] = json.loads(run["meta"] or "{}")
        if run["meta"].get("detached") and supervisor_gone(state, run):
            found[run["lease_id"]] = run
    return list(found.values())


def _release_unsupervised(state, silent: list[dict[str, Any]], events) -> list[str]:
    """Release the live leases of detached runs whose supervisor is silent: nothing extends their
    other machines' deadlines any more, yet those may still be minutes away, and the reaper's
    deadline rule would leave them billed until then. Released as `fleet down` does (ledger closed
    from what AWS reports, the run ended `lost` naming the silence)."""
    from ...errors import FleetError
    from ...leases import down
    from ...run.context import SilentEvents
    events = events or SilentEvents()
    gone = [run["lease_id"] for run in silent]
    if not gone:
        return []
    try:
        return down(gone, state=state, events=events,
                    released_by="`fleet reap` (the run's supervisor is silent)")
    except FleetError as exc:   # their machines still end at their deadline; `fleet down` finishes the rest
        events.warn(f"not every lease of a silent supervisor was released: {exc.one_line()}")
        return []


def _release_reaped(state, actions: list[dict[str, Any]], live: set[str], events) -> list[str]:
    """Release the live leases whose instances were just ended (all of a lease's instances carry
    the same deadline and expiry, so none of them is left working)."""
    from ...errors import FleetError
    from ...leases import down
    from ...run.context import SilentEvents
    events = events or SilentEvents()
    reaped = sorted({a["lease"] for a in actions
                     if a["lease"] in live and a["action"] in ("terminate", "already-gone")})
    if not reaped:
        return []
    try:
        return down(reaped, state=state, events=events, released_by="`fleet reap` (its instances were reaped)")
    except FleetError as exc:   # the instances are ended either way; `fleet down` finishes the rest
        events.warn(f"reaped, but not every lease was released: {exc.one_line()}")
        return []
