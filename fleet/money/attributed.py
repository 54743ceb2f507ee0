"""A ledger that counts but does not append: for a run whose machine time another run already pays.

A sweep trial runs on machines its warm pool leased; the pool's run meters those machines from
lease to release (fleet/sweep), so a trial appending its own rows would bill the same seconds twice
in `fleet report`. The trial still computes its cost the same way (same segments, same prices), and
that figure goes into its summary and run record as the share of the pool's cost it used.
"""
from __future__ import annotations

from datetime import datetime

from .budget import Price
from .ledger import Ledger, OpenSegment, TickTelemetry, iso


class AttributedLedger(Ledger):
    def open_segment(self, *, lease, machine, price: Price, run_id: str | None = None,
                     at: datetime | None = None) -> OpenSegment:
        start = at or self.clock()
        fixed = {"project": lease.project, "owner": lease.user, "run_id": run_id, "template": lease.template,
                 "provider": lease.provider, "lease_id": lease.id, "machine_id": machine.id,
                 "gpus": len(machine.gpu_slots)}
        return OpenSegment(f"{machine.id}@{iso(start)}", start, price, fixed, last_end=start)

    def append(self, segments: list[OpenSegment], at: datetime | None = None, *, kind: str = "tick",
               telemetry: dict[str, TickTelemetry] | None = None) -> int:
        at = at or self.clock()
        added = 0
        for seg in segments:
            if seg.closed:
                continue
            start = seg.last_end or seg.start
            added += seg.cost_between(start, max(at, start))
            seg.seq += 1
            seg.last_end = max(at, start)
            seg.closed = kind == "close"
        return added
