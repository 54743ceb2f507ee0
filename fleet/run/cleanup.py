"""What a run does after its stages, made so that no one failure there skips the rest.

The pipeline's `finally` stops notices and the heartbeat, collects, releases, closes connections
and records: each is a `Steps.run`, so an exception in one (a BaseException too: a KeyboardInterrupt
or a broken progress sink) is kept and raised once every later step has run. A lease left up
because collecting raised would be kept alive by its heartbeat, billed, with its run `running`.

`GuardedEvents` wraps the caller's Events sink. Before cleanup it passes everything through (a sink
that raises stops the run, as any error in a stage does); from `shield()` on, and for `log()`
always (it is called from the threads reading the machines' output, where an exception would read
as a lost connection), a sink's exception is kept instead, and raised by the pipeline after cleanup.
"""
from __future__ import annotations

import threading
from dataclasses import replace
from typing import TYPE_CHECKING, Callable, TypeVar

from ..errors import ExitCode
from .types import Collected, Released

if TYPE_CHECKING:
    from ..models import Lease
    from .context import RunContext

T = TypeVar("T")


class GuardedEvents:
    """The caller's Events, so that its exceptions cannot stop a release (see the module's doc)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.error: BaseException | None = None    # the sink's first exception kept, raised after cleanup
        self._shielded = False
        self._log_broken = False
        self._lock = threading.Lock()

    def __getattr__(self, name: str):   # what a renderer offers beyond Events (progress, plain, …)
        return getattr(self.inner, name)

    def shield(self) -> None:
        """From now on the sink's exceptions are kept, not raised: the run is cleaning up."""
        self._shielded = True

    def keep(self, exc: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = exc

    def _call(self, fn: Callable, *args) -> None:
        if not self._shielded:
            fn(*args)
            return
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 — a progress widget must not stop a release
            self.keep(exc)

    def phase(self, name: str, detail: str = "") -> None:
        self._call(self.inner.phase, name, detail)

    def warn(self, message: str) -> None:
        self._call(self.inner.warn, message)

    def log(self, label: str, stream: str, line: str) -> None:
        """Never raises: the rank's log file has every line; a sink that failed gets no more."""
        if self._log_broken:
            return
        try:
            self.inner.log(label, stream, line)
        except BaseException as exc:  # noqa: BLE001 — the experiment is not the sink's to end
            self._log_broken = True
            self.keep(exc)


def keep_sink_error(events, exc: BaseException) -> None:
    """A sink's exception that a caller below the pipeline caught: kept to be raised after cleanup."""
    if isinstance(events, GuardedEvents):
        events.keep(exc)


class Steps:
    """Cleanup steps run in turn; the first exception of any is kept and raised by `raise_first`."""

    def __init__(self) -> None:
        self.error: BaseException | None = None

    def run(self, fn: Callable[[], T], default: T | None = None, *,
            failed: Callable[[BaseException], T] | None = None) -> T | None:
        """fn(); if it raises, `failed(exc)` (what the step's raising means for the run) or `default`."""
        try:
            return fn()
        except BaseException as exc:  # noqa: BLE001 — raised after the later steps (raise_first)
            if self.error is None:
                self.error = exc
            return failed(exc) if failed is not None else default

    def raise_first(self) -> None:
        if self.error is not None:
            raise self.error


def collect_raised(exc: BaseException) -> Collected:
    """Collecting raised: whatever came home, the outputs cannot be taken as complete (a run that
    succeeded ends `error`, fleet/run/execute.py with_outputs_incomplete)."""
    why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return Collected(files=0, incomplete=(f"collecting raised {why}",))


def settled(ctx: "RunContext", source, lease: "Lease | None", outcome: T) -> T:
    """The outcome as the provider and the state explain it, once the run's stages are over."""
    from .execute import not_lost_if_released
    from .loss_reason import explain_loss, overslept
    elsewhere = not_lost_if_released(ctx, outcome)   # e.g. Slurm's on_lost after `fleet down` scancelled it
    if elsewhere is not outcome:
        return elsewhere
    if outcome.machines_lost:   # the provider may know why (Slurm: PREEMPTED, NODE_FAIL)
        outcome = replace(outcome, message=explain_loss(ctx, getattr(source, "provider", None), lease, outcome.message))
    why = overslept(ctx) if outcome.status == "error" and outcome.exit_code == ExitCode.INFRASTRUCTURE else None
    if why is None:
        return outcome
    # Asleep past the machines' deadline, which the budget may have set: on waking, the run's machines
    # can read as lost before the budget's next tick bills that time. Billed now, a budget that ran out
    # ended them, and the run is budget-stopped (exit 11), not lost.
    if ctx.budget is not None and not ctx.stop_reason:
        ctx.budget.tick(ctx)
    if ctx.stop_reason == "budget":
        return replace(outcome, status="budget-stopped", exit_code=ExitCode.BUDGET_STOPPED,
                       message=ctx.stop_message, machines_lost=False)
    return replace(outcome, message=why)


def release(ctx: "RunContext", source, machines, lease: "Lease | None", status: str, keep_s: int | None) -> Released:
    """Stage "release": the lease released, or kept (`--keep`, for a run that ended on its own)."""
    from .keep import KEEPABLE, keep_within_budget
    from .lease import KeptLease
    try:   # whatever keeping raises (a locked database in the budget check), the lease is released
        if lease is not None and keep_s and status in KEEPABLE:
            keep_s = keep_within_budget(ctx, keep_s)
        if lease is not None and keep_s and status in KEEPABLE:
            until = machines.keep(ctx.state, lease, keep_s, ctx.events)
            if until is not None:
                return Released(released=False, kept_until=until)
    except Exception as exc:  # noqa: BLE001 — the run is still recorded and its reservation settled
        ctx.events.warn(f"could not keep lease {lease.id if lease else '-'} ({exc}); releasing it")
    released = source.release(ctx, lease)
    kept = source.kept_until() if isinstance(source, KeptLease) and not released else None
    return Released(released=released, kept_until=kept)
