"""Staging a lease's pinned inputs, with progress people can read: bytes sent of the bytes the
machines asked for, throughput, and each machine's state. A live line on a terminal (events that
offer `progress`), a plain line every PLAIN_INTERVAL_S otherwise (CI logs), and one summary line."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

PLAIN_INTERVAL_S = 10.0
LIVE_INTERVAL_S = 0.5


def mib(n: float) -> str:
    return f"{n / 2 ** 20:.1f} MiB"


class StageProgress:
    """Counters the sync threads update; `line()` renders them."""

    def __init__(self, machine_ids: list[str]):
        self.states = {m: "waiting" for m in machine_ids}
        self.expected = self.sent = 0
        self.t0 = time.monotonic()
        self.lock = threading.Lock()

    def state(self, machine_id: str, text: str) -> None:
        with self.lock:
            self.states[machine_id] = text

    def expect(self, n: int) -> None:
        with self.lock:
            self.expected += n

    def add(self, n: int) -> None:
        with self.lock:
            self.sent += n

    def line(self) -> str:
        with self.lock:
            dt = max(time.monotonic() - self.t0, 1e-6)
            counts: dict[str, int] = {}
            for s in self.states.values():
                counts[s] = counts.get(s, 0) + 1
            machines = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
            return (f"{mib(self.sent)} of {mib(self.expected)} sent · {mib(self.sent / dt)}/s · "
                    f"machines: {machines}")


class Ticker(threading.Thread):
    """Emits progress.line() every `interval` until stopped; a failing sink ends only the ticking
    (a broken progress line must not stop inputs going out or outputs coming home)."""

    def __init__(self, emit: Callable[[str], None], progress: Any, interval: float, name: str):
        super().__init__(daemon=True, name=f"fleet-{name}-progress")
        self.emit, self.progress, self.interval = emit, progress, interval
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.emit(self.progress.line())
            except Exception:  # noqa: BLE001
                return


def start_ticker(events: Any, phase: str, progress: Any, interval: float | None = None) -> Ticker:
    """A started Ticker for `phase`: a live line where the events offer `progress` (a terminal), else
    a plain phase line every PLAIN_INTERVAL_S (CI logs). None started at interpreter shutdown, when no
    new thread may start: the work goes on without progress lines then."""
    live = getattr(events, "progress", None)
    plain = live is None or getattr(events, "plain", True)
    emit = (lambda text: live(phase, text)) if live else (lambda text: events.phase(phase, text))
    ticker = Ticker(emit, progress, interval if interval is not None else
                    PLAIN_INTERVAL_S if plain else LIVE_INTERVAL_S, phase)
    try:
        ticker.start()
    except RuntimeError:
        pass
    return ticker


def warn_dropped(warn: Callable[[str], None], s) -> None:
    """The one warning of a sync (SyncStats `s`) that met a corrupt host-cache entry and sent it again."""
    if s.cache_dropped:
        warn(f"machine {s.machine_id}: a corrupt entry in its host's chunk cache, {s.cache_dropped}, "
             "was dropped and sent again")


def stage_lease(ctx, store, targets_for, sources: dict, config: Any) -> list:
    """Sync every machine of ctx.lease (see sync.sync_lease), reporting progress on ctx.events.
    Machines that share a staging directory (a shared filesystem) are synced once: the first of
    them writes what all of them read."""
    from ..stage import one_per_staging_dir
    from .sync import sync_lease
    machines = one_per_staging_dir(ctx.lease.machines)
    sharing = len(ctx.lease.machines) - len(machines)
    progress = StageProgress([m.id for m in machines])
    stop = getattr(ctx, "stop", None)

    def sent(n: int) -> None:
        # A cancelled CI job is killed seconds after its first signal: a copy of gigabytes finished
        # first left the machines up (and billed) to their deadline and the job without a summary.
        if stop is not None and stop.is_set():
            from ..errors import Cancelled
            raise Cancelled("staging stopped: the run was asked to stop")
        progress.add(n)
    ticker = start_ticker(ctx.events, "stage", progress)
    try:
        stats = sync_lease(machines, store, targets_for, progress=sent, sources=sources,
                           cache_dir=getattr(config, "cache_dir", None), cache_max=getattr(config, "cache_max", None),
                           on_state=progress.state, on_expect=progress.expect)
    finally:
        ticker.stop.set()
    for s in stats:
        warn_dropped(ctx.events.warn, s)
    sent = sum(s.bytes_sent for s in stats)
    dt = max(time.monotonic() - progress.t0, 1e-6)
    current = sum(1 for s in stats if s.targets_current and not s.targets_written)
    reused = sum(s.files_reused for s in stats)
    direct = sum(s.bytes_direct + s.bytes_objects for s in stats)
    extra = f", {direct} bytes pulled from S3 by the machines" if direct else ""
    peer = sum(s.bytes_peer for s in stats)
    if peer:
        extra += f", {peer} bytes forwarded from the first host to the others"
    if sharing:
        extra += f"; {sharing} more machine(s) read them from a shared filesystem"
    ctx.events.phase("stage", f"pinned inputs on {len(stats)} machine(s), {sent} bytes of chunks sent "
                              f"({mib(sent / dt)}/s), {current} already current, {reused} unchanged files "
                              f"linked{extra}")
    return stats

