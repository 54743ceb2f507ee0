"""The provider contract's optional capabilities: each a mixin a provider inherits to declare it, and
callers ask with `isinstance` (never by probing signatures or attributes). The core contract is in
base.py, which re-exports these names."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from ..models import Lease, Machine, MachineState, Plan

if TYPE_CHECKING:
    import threading


class ReportsMachines(ABC):
    """`lease` takes `on_machine=callback` and calls it, in the thread that called `lease`, as soon
    as each machine exists and holds its deadline, before `lease` returns: the caller records the
    machine and opens its cost segment there, so a controller killed mid-lease leaves every reported
    machine on the ledger. If the callback raises, the machine counts as failed (release, raise)."""

    @abstractmethod
    def lease(self, plan: Plan, lease_id: str, deadline_s: int,
              on_machine: Callable[[Machine], None] | None = None) -> Lease: ...


class StopsOnCancel(ABC):
    """`lease` takes `cancel=threading.Event` and, once it is set (Ctrl-C / SIGTERM of the run),
    stops making machines, releases what it made and raises fleet.errors.Cancelled, within a bounded
    time however many machines were planned. Combined with ReportsMachines, `lease` takes both."""

    @abstractmethod
    def lease(self, plan: Plan, lease_id: str, deadline_s: int, *,
              cancel: "threading.Event | None" = None) -> Lease: ...


class SweepsLeftovers(ABC):
    """Finds machines it made that no live lease owns (a controller killed mid-lease) and ends them;
    `fleet down --all` asks every provider that has this."""

    @abstractmethod
    def sweep(self, live_machine_ids: set[str]) -> list[str]:
        """End leftovers not in `live_machine_ids`; return their machine ids. The set also holds the
        live leases' own ids: a lease still leasing (another `fleet up`) has machines not recorded
        yet, and no `<lease>-n<rank>` of it is a leftover."""


class DescribesLeases(ABC):
    """Describes many leases with a constant number of API calls (AWS: one DescribeInstances,
    filtered by fleet's lease tag, for all of them), so `fleet status` with 1,000 leases does not
    make 1,000 calls. Each lease's list is what `describe(lease)` returns for it.

    `observed_state_ttl_s` > 0: that call is remote and slow, so `fleet status` remembers the answer
    in the state and shows it, with its age, for that long instead of asking again (`--refresh`
    asks now; fleet/lease_status.py). 0: asked at every status."""

    observed_state_ttl_s: float = 0.0

    @abstractmethod
    def describe_leases(self, leases: list[Lease]) -> dict[str, list[MachineState]]: ...


class HasLeaseMetadata(ABC):
    """Has facts to record with a lease before anything is made (e.g. AWS's region), so `fleet down`
    can find what a killed controller launched, from any directory."""

    @abstractmethod
    def lease_meta(self) -> dict[str, Any]: ...


class PublishesDeadline(ABC):
    """Keeps each heartbeat's confirmed deadline where the provider's own reaper reads it (AWS: a
    `fleet:deadline` tag), so a dead controller's machines end at the deadline even where nothing on
    the machine ends them. Called from the heartbeat's thread, and once for --keep / `fleet extend`."""

    @abstractmethod
    def publish_deadline(self, lease: Lease, deadline: Any) -> None: ...


class HasHardLimit(ABC):
    """The provider holds its own hard end for a lease that outlives fleet's watchdog (Slurm: the
    allocation's time limit; AWS: the reaper's expiry tag). `fleet extend` / --keep raise it before
    moving the machines' deadlines."""

    hard_limit_name: str = "the scheduler's time limit"      # what a capped extension names

    @abstractmethod
    def extend_limit(self, lease: Lease, until: Any) -> Any:
        """Raise the lease's hard end to at least `until` (a UTC datetime), never past
        `lease.max_deadline` and never lower than it is; return the hard end now in force. Raises
        a FleetError whose one line names the provider's reason when it refuses."""


class ReleasesMachines(ABC):
    """Destroys some machines of a lease and leaves the others running (a sweep's warm pool gives
    back the machines it has no trial left for while the last trials run). Idempotent like
    `release`: a machine already gone is fine. The lease stays active; `release` still ends the rest."""

    @abstractmethod
    def release_machines(self, lease: Lease, machine_ids: list[str]) -> None:
        """End exactly the machines of `lease` named in `machine_ids`; never touch the others. An error
        after some of them were given back carries their ids as `released` (the caller stops billing
        those and keeps billing the rest: fleet/sweep/shrink.py)."""


class StagesDataDirectly(ABC):
    """Its machines can fetch snapshot chunks from the store themselves (e.g. AWS machines from S3)."""

    @abstractmethod
    def reaches_store(self, store_url: str) -> bool:
        """True when machines of this provider can read `store_url` without the controller."""


@dataclass(frozen=True)
class Interruption:
    """A provider's warning that a machine will be taken away (e.g. a spot reclaim notice)."""

    machine_id: str
    at: Any                  # datetime (UTC) the machine goes
    reason: str = ""


class InterruptionNotices(ABC):
    """Says ahead of time when machines will be taken away (spot reclaim, maintenance). The notice
    is read on the machine itself (AWS: only the instance reaches its metadata service): while the
    command runs, fleet/run/notices.py keeps fleet/remote/notice_watch.py running on each machine
    this returns a URL for, and stops the run (checkpoint, then recovery) the moment it speaks."""

    @abstractmethod
    def notice_url(self, machine: Machine) -> str | None:
        """Where `machine` reads its interruption notices (IMDSv2 base URL, or a sandbox's
        `file://` stand-in); None: this machine gets none (e.g. on-demand)."""


@dataclass(frozen=True)
class QueueStatus:
    """Where a waiting lease stands: the scheduler's state and its own words for why it waits."""

    job: str                 # the scheduler's id for the request (a Slurm job id)
    state: str               # e.g. "PENDING"
    reason: str = ""         # e.g. "Resources", "Priority", "QOSMaxGRESPerJob"
    waited_s: float = 0.0


@dataclass
class LeaseWatch:
    """What the run hands a Queueing provider's `lease`: how long it may wait, whom to tell, how to
    stop. Pending is a state, not an error: `on_queue` hears each change of reason."""

    cancel: Any                                       # threading.Event: set → withdraw the request, raise Cancelled
    on_queue: Callable[[QueueStatus], None] = lambda status: None
    # The scheduler ended the lease under a running experiment (node failure, preemption): one line
    # naming its reason. The run stops with an error and releases.
    on_lost: Callable[[str], None] = lambda message: None
    # The scheduler paused the lease's machines but keeps them (Slurm SUSPENDED), then resumed them:
    # one line each. Not a loss: the run goes on.
    on_suspended: Callable[[str], None] = lambda message: None
    on_resumed: Callable[[str], None] = lambda message: None
    max_wait_s: float | None = None                   # None: the provider's own default


class Queueing(ABC):
    """Leases wait in a queue (a batch scheduler): `lease(..., watch=LeaseWatch)` blocks until the
    machines are granted, reporting the queue through `watch.on_queue`; it withdraws the request and
    raises (CapacityError, exit 10) after `watch.max_wait_s`, or Cancelled when `watch.cancel` is set.
    While the lease lives it calls `watch.on_lost` if the scheduler takes the machines away."""

    @abstractmethod
    def lease(self, plan: Plan, lease_id: str, deadline_s: int,
              on_machine: Callable[[Machine], None] | None = None, watch: LeaseWatch | None = None) -> Lease: ...


class ExplainsLoss(ABC):
    """Knows why it took a lease's machines away (a scheduler's verdict, e.g. Slurm's PREEMPTED or
    NODE_FAIL): asked once when a run lost its machines, so the run's message and the recovery line
    name the cause rather than only "the connection closed"."""

    @abstractmethod
    def loss_reason(self, lease: Lease) -> str | None:
        """One line naming why the lease's machines ended, or None (not known, or still running).
        Bounded (a few seconds at most) and never raises."""


class SupervisesFromNode0(ABC):
    """A detached run's supervisor may run on node 0 of this provider's lease (fleet/run/node_launch.py),
    under a login of its own there, instead of on the computer that ran `fleet up -d`. What differs
    between providers (which files and credentials node 0 needs, how its key reaches the other
    machines, whether releasing node 0 ends the supervisor) is the handoff's (fleet/providers/node0.py)."""

    @abstractmethod
    def node0_handoff(self) -> Any:
        """A fleet.providers.node0.Node0Handoff for this provider."""


class SupervisesFromLoginNode(ABC):
    """A detached run's supervisor may run on the login node this provider runs its scheduler's tools
    on over SSH (Slurm's `[slurm] login`), and lease from there (fleet/run/login_launch.py): nothing
    of the run then hangs off the launching computer's SSH connections."""

    @abstractmethod
    def login_shell(self, lease: Any = None) -> Any:
        """A shell on the login node (run, close: fleet/providers/slurm/handoff.py LoginShell), the
        one `lease` was made from when given; None where the tools run on this computer."""

    @abstractmethod
    def login_node(self) -> str | None:
        """The login node as user@host, or None (fleet runs on it)."""

    @abstractmethod
    def supervisor_python(self) -> str:
        """The Python (>= 3.11, with fleet's dependencies) the supervisor runs under there."""

    @abstractmethod
    def login_node_env(self) -> dict[str, str]:
        """Environment telling the supervisor there that it runs on the login node."""


class ReleasedFromAnywhere(ABC):
    """Any computer that has the state and the lease owner's credentials (AWS's, the keys to the
    team's hosts) can release this provider's leases as `fleet down` does: end their machines, free
    what they hold, read what to bill. `fleet reap` judges such leases: one whose detached run's
    supervisor is gone (silent, or its process dead on this computer) is released from there, its
    run ended `lost` and resumed where its settings allow (fleet/run/reap_silent.py). Not the local
    provider's: its machines are processes of the computer that made them, whose next `fleet`
    command ends a dead supervisor's lease (fleet/run/detach.py `reconcile`)."""

    @abstractmethod
    def why_not_released_here(self, lease: Lease) -> str | None:
        """None when this computer can release `lease` now; else why not, in one line (e.g. the
        keys to its hosts are not here). Cheap: no network."""


CAPABILITIES: tuple[type, ...] = (ReportsMachines, StopsOnCancel, SweepsLeftovers, HasLeaseMetadata,
                                  PublishesDeadline, HasHardLimit, StagesDataDirectly, InterruptionNotices,
                                  Queueing, ReleasesMachines, ExplainsLoss, SupervisesFromNode0,
                                  ReleasedFromAnywhere, SupervisesFromLoginNode)


def capabilities(provider: Any) -> list[str]:
    """Names of the optional capabilities `provider` declares (for `fleet providers` and docs)."""
    return [c.__name__ for c in CAPABILITIES if isinstance(provider, c)]
