"""Waiting for EC2 capacity (`fleet up --wait 10m`, `fleet sweep --wait 10m`) instead of exit 10.

Without `--wait`, a launch that finds no capacity in any allowed AZ, instance type and market
(InsufficientInstanceCapacity, SpotMaxPriceTooLow, MaxSpotInstanceCountExceeded, …; launch.py tries
them all first) fails at once with exit 10, as before. With it, the whole round of attempts is
tried again after a back-off (5 s, doubling, at most 60 s, never past the wait's end) until one
launches or the wait is over (exit 10, saying how long it waited and what EC2 last said). An
account quota (VcpuLimitExceeded) is waited on too: it frees up as the account's other instances end.

While it waits, the lease is a row in the shared queue (fleet/providers/ssh/queue.py's table, which
`fleet queue` lists) with its reason, e.g. "waiting for capacity: g6.12xlarge in us-east-1
(InsufficientInstanceCapacity)", kept fresh so a dead controller's row stops counting. Cloud
waiters never hold up team-host requests: each provider's waiters queue among themselves. Ctrl-C
while waiting stops at once; nothing was launched.
"""
from __future__ import annotations

import time
from typing import Any, Callable, TypeVar

from ...errors import Cancelled, CapacityError
from ..base import LeaseWatch, QueueStatus

T = TypeVar("T")
BACKOFF_START_S = 5.0
BACKOFF_CAP_S = 60.0
TOUCH_EVERY_S = 10.0          # the queue row counts as live for 30 s (queue.STALE_S)


def wait_reason(instance_type: str, region: str, codes: list[str]) -> str:
    kinds = ", ".join(dict.fromkeys(c for c in codes if c)) or "no capacity"
    return f"waiting for capacity: {instance_type} in {region} ({kinds})"


def launch_waiting(try_launch: Callable[[Callable[[Any, str], None]], T], watch: LeaseWatch | None, *,
                   lease_id: str, plan, region: str, open_db: Callable[[], Any], provider: str = "aws") -> T:
    """`try_launch(on_attempt)` (one round over every attempt; `on_attempt(attempt, code)` hears
    each failed one), again and again while `watch.max_wait_s` lasts. Raises CapacityError when the
    wait is over, Cancelled when `watch.cancel` is set."""
    max_wait = watch.max_wait_s if watch is not None else None
    if not max_wait:
        return try_launch(lambda attempt, code: None)
    start, rounds, queue = time.monotonic(), 0, None
    try:
        while True:
            codes: list[str] = []
            try:
                return try_launch(lambda attempt, code: codes.append(code) if code != "launched" else None)
            except CapacityError as exc:
                waited = time.monotonic() - start
                if waited >= max_wait:
                    raise CapacityError(f"waited {waited:.0f}s for capacity: {exc.message}",
                                        hint="wait longer (--wait), add AZs or instance types to the template, "
                                             "or ask for fewer --gpus") from None
                reason = wait_reason(plan.instance_type or plan.template.name, region, codes)
                if queue is None:
                    from ..ssh.queue import WaitQueue
                    queue = WaitQueue(open_db())
                    queue.join(lease_id=lease_id, owner=plan.user, project=plan.project, gpus=plan.gpus,
                               machines=plan.machine_count, provider=provider, reason=reason)
                watch.on_queue(QueueStatus(job=lease_id, state="WAITING", reason=reason, waited_s=waited))
                pause_until = time.monotonic() + min(BACKOFF_CAP_S, BACKOFF_START_S * 2 ** rounds,
                                                     max(0.0, max_wait - waited))
                # Doubling stops once past the cap: 2**1024 is not a float (round 1,025: ~17 h in).
                rounds = min(rounds + 1, 32)
                while (left := pause_until - time.monotonic()) > 0:
                    queue.touch(lease_id, reason)
                    if watch.cancel.wait(min(TOUCH_EVERY_S, left)):
                        raise Cancelled("cancelled while waiting for capacity; nothing was launched") from None
                if watch.cancel.is_set():
                    raise Cancelled("cancelled while waiting for capacity; nothing was launched") from None
    finally:
        if queue is not None:
            queue.leave(lease_id)
