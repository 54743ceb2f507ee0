"""A ledger that counts but does not append: for a run whose machine time another run already pays.

A sweep trial runs on machines its warm pool leased; the pool's run meters those machines from
lease to release (fleet/sweep), so a trial appending its own rows would bill the same seconds twice
in `fleet report`. The trial still computes its cost the same way (same segments, same prices), and
that figure goes into its summary and run record as the share of the pool's cost it used.

The same holds machine by machine for a run on a kept lease while another live run bills those
machines (RunMeter's `paid_by_others`): the machine-seconds are on the ledger once, the other run's.
"""
from __future__ import annotations

from datetime import datetime

from .budget import Price
from .ledger import Ledger, OpenSegment, TickTelemetry, iso


def attributed_segment(*, lease, machine, price: Price, run_id: str | None, at: datetime) -> OpenSegment:
    """A segment as Ledger.open_segment would open it, kept in memory only."""
    fixed = {"project": lease.project, "owner": lease.user, "run_id": run_id, "template": lease.template,
             "provider": lease.provider, "lease_id": lease.id, "machine_id": machine.id,
             "gpus": len(machine.gpu_slots)}
    return OpenSegment(f"{machine.id}@{iso(at)}", at, price, fixed, last_end=at)


def accrue(segments: list[OpenSegment], at: datetime, *, close: bool = False) -> int:
    """What the open `segments` cost up to `at` since their last accrual (their rows, not written)."""
    added = 0
    for seg in segments:
        if seg.closed:
            continue
        start = seg.last_end or seg.start
        added += seg.cost_between(start, max(at, start))
        seg.seq += 1
        seg.last_end = max(at, start)
        seg.closed = close
    return added


class AttributedLedger(Ledger):
    def open_segment(self, *, lease, machine, price: Price, run_id: str | None = None,
                     at: datetime | None = None) -> OpenSegment:
        return attributed_segment(lease=lease, machine=machine, price=price, run_id=run_id, at=at or self.clock())

    def append(self, segments: list[OpenSegment], at: datetime | None = None, *, kind: str = "tick",
               telemetry: dict[str, TickTelemetry] | None = None) -> int:
        return accrue(segments, at or self.clock(), close=kind == "close")
