"""The provider contract: lease, describe, release. Three calls and nothing else.

A provider never runs experiment code. After `lease` returns, every machine answers SSH (or will
shortly: the caller waits), holds its own deadline (the on-machine watchdog from
`fleet/remote/agent/agent.py` is running with `deadline_s` seconds left), and has the agent at
`machine.agent_path`. Everything after that (sync, run, telemetry, teardown) is shared code.

Every provider declares `max_machines_per_lease` (an int attribute or property): `fleet up` refuses a
plan with more machines before anything is recorded or started (`check_machine_count`).
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..errors import UsageError
from ..models import Lease, MachineState, Plan, Template

# For a provider that declares no cap of its own.
DEFAULT_MAX_MACHINES_PER_LEASE = 256


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
        failed machine (release everything, raise).

        Optional keyword `cancel` (a threading.Event): a provider that accepts it stops making
        machines once it is set (Ctrl-C / SIGTERM of the run), releases what it made and raises
        fleet.errors.Cancelled, within a bounded time however many machines were planned."""
        ...

    def describe(self, lease: Lease) -> list[MachineState]:
        """What the provider itself says about each machine (not fleet's state). Providers that can
        find a lease's machines by themselves (a directory name, a tag) also return those missing
        from `lease.machines`, marked `unrecorded=True`, so `fleet down` can bill them."""
        ...

    def release(self, lease: Lease) -> None:
        """Destroy every machine of the lease. Idempotent: already-gone machines are fine."""
        ...


def max_machines_per_lease(provider) -> int:
    return int(getattr(provider, "max_machines_per_lease", DEFAULT_MAX_MACHINES_PER_LEASE))


def check_machine_count(provider, plan: Plan) -> None:
    """Refuse, with one line naming the cap, a plan with more machines than the provider leases at once.
    `machine_cap_hint` (optional attribute) says how the cap can be changed where it can."""
    cap = max_machines_per_lease(provider)
    if plan.machine_count <= cap:
        return
    per = plan.template.gpus_per_machine
    hint = getattr(provider, "machine_cap_hint", None) or "ask for fewer GPUs"
    if per:
        hint += f", or a template with more than {per} GPU(s) per machine"
    raise UsageError(f"{plan.gpus} GPUs on {plan.template.name} is {plan.machine_count} machines; the "
                     f"{provider.name} provider leases at most {cap} machines at once", hint=hint)
