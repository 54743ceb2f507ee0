"""The reaper's hard end of an AWS lease: `fleet:expires-at`, set at launch to the earlier of
max_duration and the moment the first run's budget runs out at its burn rate (plus teardown grace),
and never moved: the scheduled reaper (a Lambda, with no state to ask) terminates the lease's
instances there whatever `fleet:deadline` says. `fleet extend` and `--keep` are capped by it and say
so (HasHardLimit), where they once reported a lease kept to a later deadline that the reaper cut."""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from ..capabilities import HasHardLimit

if TYPE_CHECKING:
    from ...models import Lease
    from .outputs import StackOutputs


class ReaperExpiry(HasHardLimit):
    hard_limit_name = "the AWS reaper's expiry (fleet:expires-at, set at launch)"
    _outputs: "StackOutputs | None" = None     # the provider's stack outputs, once read

    def extend_limit(self, lease: "Lease", until: datetime) -> datetime:
        """The earliest `fleet:expires-at` of the lease's instances (it cannot be raised), at most
        max_deadline; max_deadline where no instance says (then the reaper judges by age)."""
        from .launch import find_instances, lease_filter, lease_stack
        from .reap import TAG_EXPIRES, _parse_time
        try:
            mine = lease_filter(lease.id, lease_stack(lease, self._outputs))
            found = find_instances(self._ec2_for(lease), mine)     # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 — throttled, offline: `--keep` must not release for it
            import logging
            logging.getLogger("fleet").warning(f"could not read lease {lease.id}'s fleet:expires-at ({exc}); the "
                                               "AWS reaper may end it before the deadline it is given")
            return lease.max_deadline
        ends = [_parse_time({t["Key"]: t["Value"] for t in i.get("Tags", [])}.get(TAG_EXPIRES)) for i in found]
        return min([e for e in ends if e is not None] + [lease.max_deadline])


def refuse_past_reaper_cap(outputs, max_duration_s: int) -> None:
    """A lease longer than the stack's reaper cap would be ended at the cap, whatever its own
    fleet:expires-at says (reap.py): refuse it before anything is launched."""
    from ...errors import UsageError
    from .reap import max_life_of      # the reaper's own reading: a huge cap is held to its limit there
    hours = int(max_life_of(outputs.reaper.max_lease_hours).total_seconds() // 3600)
    if max_duration_s > hours * 3600:
        raise UsageError(f"max_duration {max_duration_s / 3600:g}h is longer than this stack's reaper allows "
                         f"({hours}h: it ends every machine by then)",
                         hint="shorten --max-duration, or raise fleet:reaper.maxLeaseHours in the stack config "
                              "and `fleet stack up`")
