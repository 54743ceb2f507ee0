"""Telemetry streamed home: an observer that copies each machine's telemetry.jsonl (written by the
agent every TELEMETRY_INTERVAL_S) into runs/<id>/telemetry/node-<rank>.jsonl while the command
runs. The budget's idle policy and the ledger's utilisation columns read those files.
"""
from __future__ import annotations

import threading
from pathlib import Path

from ..models import Machine
from .context import RunContext
from .observers import RunObserver
from .summary import RunSummary

TELEMETRY_INTERVAL_S = 5.0    # the agent samples this often
TELEMETRY_FETCH_S = 5.0       # and the controller brings the file home this often

FETCH_MAX = 4 * 1024 * 1024    # bytes of a machine's telemetry file read per round (a sample is ~200 bytes)


class TelemetryFetch(RunObserver):
    def __init__(self, fetch_every_s: float = TELEMETRY_FETCH_S):
        self.fetch_every_s = fetch_every_s
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def on_tick(self, ctx: RunContext) -> None:
        with self._lock:
            if self._thread is not None or ctx.lease is None:
                return
            # The lease's machines as they are now at each round: a sweep's pool gives back idle
            # machines while it runs (fleet/sweep/shrink.py), and those are not asked again.
            self._thread = threading.Thread(target=self._loop, args=(Path(ctx.run_dir), list(ctx.lease.machines),
                                                                     lambda: {m.id for m in ctx.lease.machines}),
                                            name="fleet-telemetry", daemon=True)
            self._thread.start()

    def on_finish(self, ctx: RunContext, summary: RunSummary) -> None:
        self.stop()

    def stop(self) -> None:
        """The fetching thread ends (the pipeline calls this whether or not the run was recorded)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self, run_dir: Path, machines: list[Machine], current=None) -> None:
        from ..remote.ssh import connect
        offsets = {m.id: 0 for m in machines}
        sessions: dict = {}
        out_dir = run_dir / "telemetry"
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            while True:
                live = current() if current is not None else None
                for m in machines:
                    if live is not None and m.id not in live:
                        continue
                    try:
                        if m.id not in sessions:
                            session = connect(m, timeout=5)
                            sessions[m.id] = (session, session.sftp())
                        with sessions[m.id][1].open(f"{m.state_dir}/telemetry.jsonl", "rb") as f:
                            f.seek(offsets[m.id])
                            data = f.read(FETCH_MAX)          # the machine writes this file: bounded per round
                        end = data.rfind(b"\n") + 1          # whole lines only
                        if not end and len(data) >= FETCH_MAX:
                            offsets[m.id] += len(data)        # no line ends in it: not telemetry, skipped
                        if end:
                            with open(out_dir / f"node-{m.node_rank}.jsonl", "ab") as local:
                                local.write(data[:end])
                            offsets[m.id] += end
                    except FileNotFoundError:
                        continue
                    except Exception:  # noqa: BLE001 — telemetry never fails a run; retry next round
                        stale = sessions.pop(m.id, None)
                        if stale is not None:
                            stale[0].close()
                if self._stop.wait(self.fetch_every_s):
                    return
        finally:
            for session, _ in sessions.values():
                session.close()
