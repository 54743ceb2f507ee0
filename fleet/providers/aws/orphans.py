"""`fleet reap` from a laptop: the reaper's rules (reap.py, also run by the stack's Lambda) judged
against this state store's live leases, so an instance of no live lease goes too, not only an
expired one. Without --all-users only the caller's instances are judged by lease.

A live lease whose instances it ends (heartbeat deadline passed, or expired: no controller extends
it) is then released as `fleet down` releases it: the ledger closed from what AWS reports, and its
runs whose controller is gone ended as `lost` with a run record saying why and what was billed.
The Lambda cannot do that part (it holds no state); `fleet reap` and `fleet down` do.

Before that, a live lease of any provider whose detached run's supervisor is gone (node 0
vanished, or the supervisor died) is released, its run ended `lost` and resumed where its
settings allow (fleet/run/reap_silent.py, fleet/run/lost_resume.py): that part needs no AWS stack,
so `fleet reap` without one judges only those. --dry-run says what would happen and does nothing."""
from __future__ import annotations

from typing import Any


def live_lease_ids(state) -> set[str]:
    return {lease.id for lease in state.list_leases(active_only=False) if lease.status in ("leasing", "active")}


def stack_configured(config) -> bool:
    """Whether this computer names an AWS stack's outputs ($FLEET_AWS_OUTPUTS, `[aws] outputs` or
    `stack`): without one there are no fleet instances to judge here (a team-hosts user's `fleet reap`)."""
    import os
    from .provider import AWSProvider
    if os.environ.get("FLEET_AWS_OUTPUTS"):
        return True
    source = AWSProvider.settings_from(config).outputs_source()
    return bool(source.get("outputs") or source.get("stack"))


def reap_orphans(config, *, dry_run: bool = False, all_users: bool = False,
                 events=None) -> tuple[str | None, list[dict[str, Any]], list[str], list, list[str]]:
    """(region, or None where no AWS stack is configured here (no instance judged); one action per
    instance judged; live leases released because their instances were reaped or their run's
    supervisor is gone, on any provider whose leases this computer can release (with --dry-run:
    those it would release); what became of each such run (`LostRunResume`); one line per lease of
    a gone supervisor left alone, saying why); `config` may be None (no fleet.toml here)."""
    from ...plan import current_user
    from ...run.reap_silent import reap_silent
    from ...state import open_state
    state = open_state(config.state_url if config is not None else None)
    try:
        caller = current_user(config.user if config is not None else None)
        owner = None if all_users else caller
        silent = reap_silent(state, owner=owner, caller=caller, dry_run=dry_run, events=events,
                             state_url=config.state_url if config is not None else None)
        if not stack_configured(config):
            return None, [], silent.released, silent.resumed, silent.left
        from .provider import AWSProvider
        from .reap import max_life_of, reap
        from .session import translate
        provider = AWSProvider(config)
        live = live_lease_ids(state)
        try:
            known = {row["id"] for row in state.db.execute("SELECT id FROM leases")}
            cap = provider.outputs.reaper.max_lease_hours    # as the Lambda reads it: 10**20 is held to the limit
            actions = reap(provider.ec2, live, dry_run=dry_run, owner=owner, stack=provider.outputs.stack or None,
                           known_lease_ids=known, max_life=max_life_of(cap))
        except Exception as exc:  # noqa: BLE001 — AWS errors become one line
            raise translate(exc, "reaping fleet instances") from None
        released = silent.released + ([] if dry_run else _release_reaped(state, actions, live, events))
        return provider.outputs.region, actions, released, silent.resumed, silent.left
    finally:
        state.close()


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
