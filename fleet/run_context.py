"""What one run carries through its phases, and the hooks other concerns plug into.

Hooks keep api.py about the flow only: budgets accrue and cap deadlines, snapshots stage pinned
inputs and write records, without api.py knowing their details. Every hook method is optional.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Protocol

from .config_model import Config
from .models import Lease, Plan


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


@dataclass
class RunContext:
    config: Config
    plan: Plan
    run_id: str
    lease_id: str
    state: Any                         # fleet.state.StateStore
    events: Events
    run_dir: Path                      # local: runs/<run-id>/ (outputs, logs, summary.json)
    started_at: datetime
    lease: Lease | None = None
    command: str = ""
    cancel: threading.Event = field(default_factory=threading.Event)
    hurry: threading.Event = field(default_factory=threading.Event)   # second Ctrl-C: skip graceful waits
    stop_reason: str | None = None     # "cancelled" | "budget" | "idle" | …
    stop_message: str = ""
    record: dict[str, Any] = field(default_factory=dict)              # facts for the run record
    cancel_grace_s: float | None = None   # SIGTERM→SIGKILL when cancelled; None: api.grace_s() (CI: shorter)
    machines_lost: Callable[[], set] | None = None   # ids of machines past their own deadline (heartbeat)
    # Facts hooks want on the lease record from before any machine exists (before_lease fills it),
    # e.g. the price `fleet down` bills machines with when the controller died inside lease().
    lease_meta: dict[str, Any] = field(default_factory=dict)

    def request_stop(self, reason: str, message: str = "") -> None:
        if not self.stop_reason:
            self.stop_reason, self.stop_message = reason, message
        self.cancel.set()


class RunHook(Protocol):
    def before_lease(self, ctx: RunContext) -> None: ...
    def deadline_cap_s(self, ctx: RunContext) -> float | None: ...
    def on_machine(self, ctx: RunContext, machine) -> None: ...  # a machine exists (inside provider.lease)
    def stage(self, ctx: RunContext) -> bool: ...              # True: inputs staged, skip the plain copy
    def on_tick(self, ctx: RunContext) -> None: ...            # may call ctx.request_stop(...)
    def after_run(self, ctx: RunContext, summary: dict) -> None: ...


def call_hooks(hooks: list, method: str, *args) -> list:
    results = []
    for hook in hooks:
        fn: Callable | None = getattr(hook, method, None)
        if fn is not None:
            results.append(fn(*args))
    return results
