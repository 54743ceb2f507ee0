"""The provider contract suite's extension point: how the shared checks in tests/contract build a
provider and see, from outside, that a machine has ended.

fleet's own providers' harnesses live beside the suite. A provider from another package brings its
harness the way it brings itself, through an entry point (group `fleet.contract_harnesses`, same
name as its `fleet.providers` entry), and the suite runs every check against it too; a registered
provider with no harness anywhere fails the suite.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

HARNESS_GROUP = "fleet.contract_harnesses"


def poll(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


class ContractHarness:
    """Subclass with `template` (one the provider offers), `make()`, and where the defaults do not
    fit, `wait_ended` and `state_dir`. `request` is pytest's: ask it for fixtures you need."""

    template = ""
    gpus: int | None = 1
    name = ""

    def __init__(self, request: Any) -> None:
        self.request = request

    def make(self) -> Any:
        raise NotImplementedError

    def plan(self, provider: Any, max_s: int = 600) -> Any:
        from ..plan import make_plan
        from .base import choose_mix
        return make_plan(provider=provider.name, mix=choose_mix(provider, self.template, self.gpus),
                         max_duration_s=max_s, heartbeat_ttl_s=60, project="contract", user="tester")

    def wait_ended(self, provider: Any, lease: Any) -> bool:
        """True once every machine has ended by itself (no controller, no release)."""
        return poll(lambda: all(s.state == "gone" for s in provider.describe(lease)), 60)

    def state_dir(self, machine: Any) -> Path | None:
        """The machine's fleet state directory as a local path (None: the machine runs no processes)."""
        return Path(machine.state_dir)


def plugin_harnesses() -> dict[str, type]:
    """Harnesses other packages declare (entry point group HARNESS_GROUP), by provider name."""
    from importlib.metadata import entry_points
    return {ep.name: ep.load() for ep in entry_points(group=HARNESS_GROUP)}
