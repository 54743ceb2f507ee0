"""What one run carries through its stages: identity, where it writes, and how it is stopped.

Facts a stage produces are not stored here: they are the stage's typed result (fleet/run/types.py).
This holds only what every stage shares: ids, the state store, the progress sink (Events), and the
stop flags that signals, the budget and CI set and the execute loop honours.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

from ..config.model import Config
from ..models import Lease, Plan
from .types import Offer, RunOptions

if TYPE_CHECKING:
    from ..heartbeat import Heartbeat


@runtime_checkable
class Events(Protocol):
    """How the library reports progress; the CLI renders it (rich, plain CI lines or JSON)."""

    def phase(self, name: str, detail: str = "") -> None: ...
    def log(self, label: str, stream: str, line: str) -> None: ...
    def warn(self, message: str) -> None: ...


class SilentEvents:
    def phase(self, name: str, detail: str = "") -> None:
        pass

    def log(self, label: str, stream: str, line: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass


def checked_events(events: Any) -> Events:
    """Events given by a caller, checked now: a sink missing a method fails here, not mid-run."""
    if events is None:
        return SilentEvents()
    missing = [m for m in ("phase", "log", "warn") if not callable(getattr(type(events), m, None))]
    if missing:
        raise TypeError(f"{type(events).__name__} is not an Events sink: no {', '.join(missing)}()")
    return events


@dataclass
class RunContext:
    config: Config
    offer: Offer
    plan: Plan                         # what the provider is (or was) asked to lease
    run_id: str
    lease_id: str
    state: Any                         # fleet.state.StateStore
    events: Events
    run_dir: Path                      # local: runs/<run-id>/ (outputs, logs, summary.json)
    started_at: datetime
    options: RunOptions = field(default_factory=RunOptions)
    lease: Lease | None = None
    command: str = ""
    cancel: threading.Event = field(default_factory=threading.Event)
    hurry: threading.Event = field(default_factory=threading.Event)   # second Ctrl-C: skip graceful waits
    stop_reason: str | None = None     # "cancelled" | "budget" | "idle" | …
    stop_message: str = ""
    cancel_grace_s: float | None = None   # SIGTERM→SIGKILL when cancelled; None: execute.grace_s() (CI: shorter)
    stop_limit_s: float | None = None     # from a SIGTERM to `hurry` (GitLab CI: ci.stop_limit_s); None: never
    machines_lost: Callable[[], set] | None = None   # ids of machines past their own deadline (heartbeat)
    attempt: int = 1                   # 1, then 2, 3 … for each resumption on new machines (FLEET_ATTEMPT)
    checkpoints: list = field(default_factory=list)   # the last CheckpointUpload of each node (checkpoints.py)
    lost_machines: set = field(default_factory=set)   # ids of machines that vanished under the command
    budget: Any = None                 # fleet.run.budget.RunBudget once stage "budget" granted the run
    heartbeat: Heartbeat | None = None  # a fresh lease's (forget: machines released early; hold: suspended)
    released_early: dict = field(default_factory=dict)   # machine id → when a sweep's pool gave it back (shrink.py)
    state_wait: Any = None             # fleet.run.state_wait.StateWait: the writes recording the run's end

    def request_stop(self, reason: str, message: str = "") -> None:
        if not self.stop_reason:
            self.stop_reason, self.stop_message = reason, message
        self.cancel.set()
