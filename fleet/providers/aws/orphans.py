"""`fleet reap` from a laptop: the reaper's rules (reap.py, also run by the stack's Lambda) judged
against this state store's live leases, so an instance of no live lease goes too, not only an
expired one. Without --all-users only the caller's instances are judged by lease."""
from __future__ import annotations

from typing import Any


def live_lease_ids(state) -> set[str]:
    return {lease.id for lease in state.list_leases(active_only=False) if lease.status in ("leasing", "active")}


def reap_orphans(config, *, dry_run: bool = False, all_users: bool = False) -> tuple[str, list[dict[str, Any]]]:
    """(region, one action per instance judged); `config` may be None (no fleet.toml here)."""
    from ...plan import current_user
    from ...state import open_state
    from .provider import AWSProvider
    from .reap import reap
    from .session import translate
    state = open_state(config.state_url if config is not None else None)
    try:
        live = live_lease_ids(state)
    finally:
        state.close()
    provider = AWSProvider(config)
    owner = None if all_users else current_user(config.user if config is not None else None)
    try:
        return provider.outputs.region, reap(provider.ec2, live, dry_run=dry_run, owner=owner)
    except Exception as exc:  # noqa: BLE001 — AWS errors become one line
        raise translate(exc, "reaping fleet instances") from None
