"""The run lost its machines: ask the provider why (ExplainsLoss, e.g. Slurm's PREEMPTED or
NODE_FAIL), so the run's one-line message, and the recovery line built from it, name the cause."""
from __future__ import annotations

from typing import Any

from ..models import Lease
from ..providers.base import ExplainsLoss


def explain_loss(ctx: Any, provider: Any, lease: Lease | None, message: str | None) -> str | None:
    """The provider's reason where it has one, else `message` as it was (never raises). A lease
    released from outside the run (`fleet down`, the reaper) keeps that message: the provider would
    only say its job was cancelled."""
    if lease is None or not isinstance(provider, ExplainsLoss):
        return message
    try:
        status, released_at = ctx.state.lease_status(lease.id)
        if status not in (None, "active", "leasing") or released_at is not None:
            return message
        return provider.loss_reason(lease) or message
    except Exception:  # noqa: BLE001 — the loss is reported either way; this only names its cause
        return message
