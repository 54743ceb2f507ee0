"""Observers: code that watches a run (CI reporting, telemetry, progress) without steering it.

An observer subclasses `RunObserver` and overrides any of its declared hooks. `Observers.add`
checks it when it is registered: an `on_*` method that is not a declared hook (a misspelling) or a
hook with the wrong parameters raises TypeError then, instead of silently never being called.
Observers never fail a run: an exception from one is reported as a warning and the run goes on. A
KeyboardInterrupt or SystemExit from one is raised once every observer had that hook's call; from
`on_finish`, after the run is recorded and its machines released.

What steers a run (budget, pinned inputs, the record) is not an observer: those are stages or
typed collaborators of the pipeline (fleet/run/pipeline.py).
"""
from __future__ import annotations

import difflib
import inspect
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from ..models import Lease, Machine
    from .context import RunContext
    from .summary import RunSummary


class RunObserver:
    """Every hook a run calls, in order. Override the ones you need; the defaults do nothing."""

    def on_machine(self, ctx: "RunContext", machine: "Machine") -> None:
        """A machine exists (called from inside the provider's lease, as each one is made)."""

    def on_lease(self, ctx: "RunContext", lease: "Lease") -> None:
        """Every machine of the lease exists (they may not answer SSH yet)."""

    def on_ready(self, ctx: "RunContext", lease: "Lease") -> None:
        """Every machine answers SSH; inputs are about to be staged."""

    def on_tick(self, ctx: "RunContext") -> None:
        """About once a second while setup and the command run."""

    def on_finish(self, ctx: "RunContext", summary: "RunSummary") -> None:
        """The run is over: machines released (or kept), cost and record known, its state final."""


HOOKS: dict[str, inspect.Signature] = {
    name: inspect.signature(fn) for name, fn in vars(RunObserver).items() if name.startswith("on_")
}


def check_observer(observer: object) -> None:
    """Raise TypeError unless `observer` is a RunObserver whose every `on_*` method is a declared hook
    with the declared parameters."""
    cls = type(observer)
    if not isinstance(observer, RunObserver):
        raise TypeError(f"{cls.__name__} is not a RunObserver (subclass fleet.run.RunObserver)")
    for name in dir(cls):
        if not name.startswith("on_"):
            continue
        fn = getattr(cls, name)
        if name not in HOOKS:
            close = difflib.get_close_matches(name, HOOKS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else f"; hooks are {', '.join(HOOKS)}"
            raise TypeError(f"{cls.__name__}.{name} is not a run hook{hint}")
        if not callable(fn):
            raise TypeError(f"{cls.__name__}.{name} is not a method")
        declared = [p.name for p in HOOKS[name].parameters.values()]
        given = [p.name for p in inspect.signature(fn).parameters.values()]
        if len(given) != len(declared):
            raise TypeError(f"{cls.__name__}.{name}{inspect.signature(fn)} does not match the hook "
                            f"{name}{HOOKS[name]}")


class Observers:
    """The registered observers of one run, called in registration order."""

    def __init__(self, observers: Iterable[RunObserver] = ()):
        self._all: list[RunObserver] = []
        for observer in observers:
            self.add(observer)

    def add(self, observer: RunObserver) -> RunObserver:
        check_observer(observer)
        self._all.append(observer)
        return observer

    def __iter__(self):
        return iter(self._all)

    def __len__(self) -> int:
        return len(self._all)

    def _each(self, ctx: "RunContext", what: str, call) -> None:
        stop: BaseException | None = None
        for observer in self._all:
            try:
                call(observer)
            except Exception as exc:  # noqa: BLE001 — watching a run must never break it
                ctx.events.warn(f"{type(observer).__name__}.{what} failed: {type(exc).__name__}: {exc}")
            except BaseException as exc:  # noqa: BLE001 — KeyboardInterrupt, SystemExit: once each observer had its call
                stop = stop or exc
        if stop is not None:
            raise stop

    def machine(self, ctx: "RunContext", machine: "Machine") -> None:
        self._each(ctx, "on_machine", lambda o: o.on_machine(ctx, machine))

    def lease(self, ctx: "RunContext", lease: "Lease") -> None:
        self._each(ctx, "on_lease", lambda o: o.on_lease(ctx, lease))

    def ready(self, ctx: "RunContext", lease: "Lease") -> None:
        self._each(ctx, "on_ready", lambda o: o.on_ready(ctx, lease))

    def tick(self, ctx: "RunContext") -> None:
        self._each(ctx, "on_tick", lambda o: o.on_tick(ctx))

    def finish(self, ctx: "RunContext", summary: "RunSummary") -> None:
        self._each(ctx, "on_finish", lambda o: o.on_finish(ctx, summary))
