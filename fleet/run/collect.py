"""Bring a run's outputs home from every machine, with progress people can read: 50,000 small files
took half a minute of silence after "fetching outputs" on a local machine, minutes over a slow link.
Files and bytes received so far, their rate, and how many machines are done: a live line on a
terminal (events that offer `progress`), a plain line every PLAIN_INTERVAL_S otherwise (CI logs),
as staging reports (fleet/snapshots/sync_progress.py). A collect shorter than that prints no more."""
from __future__ import annotations

import threading
import time
from typing import Callable

from ..models import Lease, Machine
from ..parallel import parallel
from ..snapshots.sync_progress import mib, start_ticker
from .context import RunContext
from .types import Collected

SKIPPED_SHOWN = 10     # outputs skipped on one machine named one per line; the rest counted


class CollectProgress:
    """What each machine's extraction has written so far (its live Extracted), and which are done."""

    def __init__(self, machines: int):
        self.machines = machines
        self.filling: dict[str, object] = {}
        self.done = 0
        self.t0 = time.monotonic()
        self.lock = threading.Lock()

    def watch(self, machine_id: str) -> Callable[[object], None]:
        """What fetch_directory calls with each try's Extracted: a second try replaces the first."""
        def filling(got) -> None:
            with self.lock:
                self.filling[machine_id] = got
        return filling

    def finished(self) -> None:
        with self.lock:
            self.done += 1

    def line(self) -> str:
        with self.lock:
            files = sum(g.files for g in self.filling.values())
            size = sum(g.bytes for g in self.filling.values())
            done = self.done
        dt = max(time.monotonic() - self.t0, 1e-6)
        return (f"{files:,} files, {mib(size)} received ({files / dt:,.0f} files/s, {mib(size / dt)}/s) · "
                f"machines: {done} of {self.machines} done")


def collect(ctx: RunContext, lease: Lease, *, interval: float | None = None) -> Collected:
    """Bring outputs home (streamed to disk, links preserved), best effort and bounded: a dead
    machine must not block release. Outputs that did not all come home (a transfer cut short, a
    full disk, the outputs_max limit) are named in `incomplete`, one line per machine. `interval`:
    seconds between progress lines (default: by the kind of output, see the module)."""
    from ..safe_extract import Extracted
    from ..stage import fetch_directory
    from .loss_reason import overslept_s
    if ctx.hurry.is_set():
        return Collected(files=0)
    ctx.events.phase("collect", f"fetching outputs into {ctx.run_dir}")
    lost = ctx.machines_lost() if ctx.machines_lost else set()
    limit = ctx.config.outputs_max_bytes or None
    progress = CollectProgress(len(lease.machines))

    def fetch(m: Machine) -> Extracted:
        if m.id in lost:   # past its deadline unreachable: its watchdog ended it, outputs and all
            ctx.events.warn(f"outputs of {m.id} are lost with it: it stopped answering and its watchdog ended it")
            return Extracted(incomplete="the machine stopped answering and its watchdog ended it")
        try:
            got = fetch_directory(m, f"{m.workdir}/outputs/{ctx.run_id}", ctx.run_dir / f"node-{m.node_rank}",
                                  limit=limit, watch=progress.watch(m.id), stop=ctx.hurry)
        except Exception as exc:  # noqa: BLE001
            gap = overslept_s(ctx)   # not the network's fault: fleet was stopped or asleep past the deadline
            got = Extracted(incomplete=f"its watchdog ended it while fleet was not running ({gap:.0f}s)" if gap
                            else f"could not fetch them: {exc}")
        finally:
            progress.finished()
        for why in got.skipped[:SKIPPED_SHOWN]:   # named: an output that did not come home is never silent
            ctx.events.warn(f"output skipped on node {m.node_rank}: {why}")
        if len(got.skipped) > SKIPPED_SHOWN:      # 3,000 FIFOs are not 3,000 lines; the summary keeps 100
            ctx.events.warn(f"{len(got.skipped) - SKIPPED_SHOWN} more outputs skipped on node {m.node_rank} "
                            "(summary.json names the first 100)")
        if got.incomplete:
            ctx.events.warn(f"outputs of node {m.node_rank} ({m.id}) did not all come home: {got.incomplete}; "
                            f"{got.files} complete file(s) kept")
        return got

    ticker = start_ticker(ctx.events, "collect", progress, interval)
    try:
        got = parallel(lease.machines, fetch)   # also at interpreter shutdown, when executors take no more work
    finally:
        ticker.stop.set()
    return Collected(files=sum(g.files for g in got), symlinks=sum(g.symlinks for g in got),
                     skipped=tuple(why for g in got for why in g.skipped)[:100],
                     incomplete=tuple(f"node {m.node_rank} ({m.id}): {g.incomplete}"
                                      for m, g in zip(lease.machines, got) if g.incomplete))
