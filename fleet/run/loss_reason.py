"""The run lost its machines: ask the provider why (ExplainsLoss, e.g. Slurm's PREEMPTED or
NODE_FAIL), so the run's one-line message, and the recovery line built from it, name the cause."""
from __future__ import annotations

from typing import Any

from ..models import Lease
from ..providers.base import ExplainsLoss
from .context import RunContext
from .machines import WatchesStalls


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


def overslept_s(ctx: RunContext) -> float | None:
    return ctx.heartbeat.overslept_s() if isinstance(ctx.heartbeat, WatchesStalls) else None


def overslept(ctx: RunContext) -> str | None:
    """Why the machines are gone when it is that this process was not running past their deadline
    (the heartbeat saw it: fleet/heartbeat.py), which any other message (a closed connection, SSH
    refused) would leave the user to guess; None otherwise."""
    gap = overslept_s(ctx)
    if not gap:
        return None
    return (f"fleet itself was not running for {gap:.0f}s (stopped by Ctrl-Z, SIGSTOP or a debugger, or the "
            "computer slept), past the machines' deadline: their watchdogs ended them, as they end the "
            "machines of a controller that died")


# SIGTERM, SIGKILL as the shell reports them: how a command ends when its provider stops the machine.
ENDED_BY_SIGNAL = (128 + 15, 128 + 9)


def ended_by_provider(ctx: Any, provider: Any, lease: Lease | None, exit_code: int) -> str | None:
    """Why the provider took the machines, for a command that ended by SIGTERM or SIGKILL while it did;
    None when it did not (the experiment's own failure). Slurm's preemption or time limit signals every
    process of the job, the command's too, so its exit status can come home before the machine's sshd
    goes: that is the machines' loss (recovered from where configured), not a failed experiment."""
    if exit_code not in ENDED_BY_SIGNAL or not isinstance(provider, ExplainsLoss):
        return None
    return explain_loss(ctx, provider, lease, None)
