"""Finding a lease's instances: by its `fleet:lease` tag, and only in the lease's own stack. A lease
id is fleet's only within its stack: another stack in the same account and region (a teammate's,
or anyone's who copies the tags) may tag an instance with the same id, and `fleet down`, a retried
lease or `fleet status` must neither end, adopt nor bill it."""
from __future__ import annotations

from typing import Any

from ...models import Lease, MachineState
from .instances import lease_states
from .launch import TAG_LEASE, TAG_STACK, find_instances, lease_filter, lease_stack
from .outputs import StackOutputs
from .session import translate

FILTER_VALUES_MAX = 200     # EC2's limit on the values of one DescribeInstances filter


class LeaseLookup:
    """AWSProvider's describe side; needs its `_ec2_for`. `_outputs`: the stack outputs read so far
    (None: not read, and a lease recorded with its stack does not need them)."""

    _outputs: StackOutputs | None = None

    def _stack_of(self, lease: Lease | None) -> str | None:
        return lease_stack(lease, self._outputs)

    def describe(self, lease: Lease) -> list[MachineState]:
        try:
            ec2 = self._ec2_for(lease)       # type: ignore[attr-defined]
            found = {i["InstanceId"]: i for i in find_instances(ec2, lease_filter(lease.id, self._stack_of(lease)),
                                                                 states=())}
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, f"describing lease {lease.id}") from None
        return lease_states(lease, found)

    def describe_leases(self, leases: list[Lease]) -> dict[str, list[MachineState]]:
        """Every lease's machines from one paginated DescribeInstances (the region's instances tagged
        with one of these leases, or with any `fleet:lease` past 200 leases), however many leases:
        `fleet status` calls this."""
        if not leases:
            return {}
        ids = {lease.id for lease in leases}
        # ≤ 200 leases (EC2's values per filter): theirs only (not a teammate's thousand: seconds), else every
        # fleet instance; one call. An id EC2 reads as a wildcard (a planted row) is left out: none found for it.
        plain = sorted(i for i in ids if i and "*" not in i and "?" not in i)
        by_value = {TAG_LEASE: plain} if len(ids) <= FILTER_VALUES_MAX and plain else {}
        try:
            instances = find_instances(self._ec2_for(leases[0]), by_value, states=(),   # type: ignore[attr-defined]
                                       tag_keys=(TAG_LEASE,))
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, f"describing {len(leases)} lease(s)") from None
        stacks = {lease.id: self._stack_of(lease) for lease in leases}
        by_lease: dict[str, dict[str, dict[str, Any]]] = {i: {} for i in ids}
        for inst in instances:
            tags = {t.get("Key"): t.get("Value") for t in inst.get("Tags", [])}
            tag = tags.get(TAG_LEASE)
            if tag in ids and (not stacks[tag] or tags.get(TAG_STACK) == stacks[tag]):
                by_lease[tag][inst["InstanceId"]] = inst
        return {lease.id: lease_states(lease, by_lease[lease.id]) for lease in leases}
