"""The provider contract: lease, describe, release. Three calls and nothing else.

A provider never runs experiment code. After `lease` returns, every machine answers SSH (or will
shortly: the caller waits), holds its own deadline (the on-machine watchdog from
`fleet/remote/agent/agent.py` is running with `deadline_s` seconds left), and has the agent at
`machine.agent_path`. Everything after that (sync, run, telemetry, teardown) is shared code.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..models import Lease, MachineState, Plan, Template


@runtime_checkable
class Provider(Protocol):
    name: str

    def templates(self) -> dict[str, Template]:
        """Machine templates this provider offers (name → Template)."""
        ...

    def lease(self, plan: Plan, lease_id: str, deadline_s: int) -> Lease:
        """Make `plan.machine_count` machines reachable; each machine's watchdog ends it after
        `deadline_s` seconds unless extended. On failure, release whatever was made, then raise.

        Optional keyword `on_machine(machine)`: a provider that accepts it calls it, in the thread
        that called `lease`, as soon as each machine exists and holds its deadline, before `lease`
        returns; the caller records the machine and opens its cost segment there, so a controller
        killed mid-lease leaves every reported machine on the ledger. If it raises, treat it as a
        failed machine (release everything, raise)."""
        ...

    def describe(self, lease: Lease) -> list[MachineState]:
        """What the provider itself says about each machine (not fleet's state). Providers that can
        find a lease's machines by themselves (a directory name, a tag) also return those missing
        from `lease.machines`, marked `unrecorded=True`, so `fleet down` can bill them."""
        ...

    def release(self, lease: Lease) -> None:
        """Destroy every machine of the lease. Idempotent: already-gone machines are fine."""
        ...
