"""How the pipeline touches leased machines: heartbeat, readiness, staging, running, collecting,
keeping. `SSHMachines` does it over SSH (fleet/remote); a test passes another `Machines` to run
the whole pipeline against a fake provider without any sshd.
"""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Callable, Protocol, runtime_checkable

from ..models import Lease, Machine
from .context import Events, RunContext
from .inputs import Inputs
from .types import Collected, ExecResult, StagedInputs

if TYPE_CHECKING:
    from ..environment.model import PinnedEnvironment, RunEnvironment
    from .checkpoints import Checkpointer
    from .notices import NoticeWatch


@runtime_checkable
class Beats(Protocol):
    """The controller's half of the dead-man switch for one lease (fleet/heartbeat.py)."""

    def beat(self, ttl_s: float | None = None) -> None: ...
    def start(self) -> object: ...
    def stop(self) -> None: ...
    def lost(self) -> set: ...


@runtime_checkable
class WatchesStalls(Protocol):
    """A heartbeat that notes when this whole process stopped running (Ctrl-Z, SIGSTOP, the computer
    asleep), so a loss it caused is named as such (fleet/heartbeat.py; test fakes need not)."""

    def watch_stalls(self) -> object: ...
    def overslept_s(self) -> float | None: ...


@runtime_checkable
class Machines(Protocol):
    def heartbeat(self, lease: Lease, ttl_s: float, *, caps: list[Callable[[], float | None]],
                  on_deadline: Callable[[datetime], None], warn: Callable[[str], None],
                  publish: Callable[[datetime], None] | None = None) -> Beats: ...

    def wait_ready(self, ctx: RunContext, machines: list[Machine]) -> None: ...

    def stage(self, inputs: Inputs, lease: Lease, events: Events) -> StagedInputs: ...

    def execute(self, ctx: RunContext, lease: Lease, command: str, *, setup: bool = False,
                on_tick: Callable[[], None] | None = None) -> ExecResult: ...

    def collect(self, ctx: RunContext, lease: Lease) -> Collected: ...

    def keep(self, state, lease: Lease, keep_s: int, events: Events) -> str | None: ...


@runtime_checkable
class CapturesEnvironment(Protocol):
    """Machines that can say what they are (stage "environment", fleet/environment/capture.py)."""

    def capture_environment(self, ctx: RunContext, lease: Lease, store,
                            pinned: "PinnedEnvironment | None") -> "RunEnvironment": ...


@runtime_checkable
class CachesSetup(Protocol):
    """Machines whose venvs say which install-only setup built them (fleet/setup_cache.py): the
    setup stage is skipped when running it again would install nothing."""

    def setup_skip_reason(self, ctx: RunContext, lease: Lease, setup: str) -> str | None: ...


@runtime_checkable
class KeepsCheckpoints(Protocol):
    """Machines whose FLEET_CHECKPOINT_DIR is made or restored, and uploaded (stage "checkpoint",
    fleet/run/checkpoints.py)."""

    def begin_checkpoints(self, ctx: RunContext, lease: Lease, store) -> "Checkpointer": ...


@runtime_checkable
class PreparesRendezvous(Protocol):
    """Machines whose lease needs a rendezvous port before its first process (fleet/rendezvous.py):
    claimed beside staging, which it does not depend on (fleet/run/overlap.py)."""

    def prepare_rendezvous(self, ctx: RunContext, lease: Lease) -> None: ...


@runtime_checkable
class ConfirmsRendezvous(Protocol):
    """Machines whose lease's port is probed again right before the command (a claim binds nothing:
    fleet/rendezvous.py), beside the environment's capture, which it does not depend on."""

    def confirm_rendezvous(self, ctx: RunContext, lease: Lease) -> None: ...


@runtime_checkable
class WatchesNotices(Protocol):
    """Machines that watch for their provider's interruption notices while the run lasts
    (fleet/run/notices.py)."""

    def watch_notices(self, ctx: RunContext, lease: Lease, provider) -> "NoticeWatch": ...


class SSHMachines:
    """The real thing: every call goes to the machines over SSH with their pinned host keys."""

    def heartbeat(self, lease, ttl_s, *, caps, on_deadline, warn, publish=None) -> Beats:
        from ..heartbeat import Heartbeat
        return Heartbeat(lease, ttl_s, caps=caps, on_deadline=on_deadline, warn=warn, publish=publish)

    def wait_ready(self, ctx, machines) -> None:
        from .execute import wait_all_ready
        wait_all_ready(ctx, machines)

    def stage(self, inputs, lease, events) -> StagedInputs:
        return inputs.stage(lease, events)

    def execute(self, ctx, lease, command, *, setup=False, on_tick=None) -> ExecResult:
        from .execute import execute
        return execute(ctx, lease, command, setup=setup, on_tick=on_tick)

    def setup_skip_reason(self, ctx, lease, setup) -> str | None:
        from ..setup_cache import skip_reason
        return skip_reason(ctx, lease, setup)

    def collect(self, ctx, lease) -> Collected:
        from .collect import collect
        return collect(ctx, lease)

    def capture_environment(self, ctx, lease, store, pinned) -> "RunEnvironment":
        from ..environment.capture import capture
        return capture(ctx, lease, store, pinned)

    def prepare_rendezvous(self, ctx, lease) -> None:
        from ..lease_prepare import prepare_rendezvous
        prepare_rendezvous(ctx, lease)

    def confirm_rendezvous(self, ctx, lease) -> None:
        from ..rendezvous import confirm_master_port
        confirm_master_port(ctx, lease)

    def keep(self, state, lease, keep_s, events) -> str | None:
        from .keep import try_keep
        return try_keep(state, lease, keep_s, events)

    def begin_checkpoints(self, ctx, lease, store) -> "Checkpointer":
        from .checkpoints import begin
        return begin(ctx, lease, store)

    def watch_notices(self, ctx, lease, provider) -> "NoticeWatch":
        from .notices import NoticeWatch
        return NoticeWatch(ctx, lease, provider).start()
