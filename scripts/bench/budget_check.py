#!/usr/bin/env python3
"""The budget check a running meter makes every tick under a monthly budget, on a big ledger.

A run's meter re-reads its monthly scopes every tick (fleet/money/metering.py build_scopes): the
month's spend (ledger rows, open kept segments, dead controllers' silent segments) and other runs'
reservations. Measured in-process against a SQLite state seeded as fleet writes it: `--leases`
active leases of 8 machines each, ticked every 10 s for `--hours`, one of them with a dead
controller (its rows stopped an hour ago) and one kept lease idling. Side by side: the same check on
a state with only those leases' first minute of rows (the reference), interleaved, with the spread.

    python scripts/bench/budget_check.py [-n 5] [--leases 3] [--hours 24] [--json]

Informative figures (no target in an issue): `met` is null.
"""
from __future__ import annotations

import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_parser, check_samples, median_row, ratio_row, row, run_bench, say  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
MACHINES = 8
TICK_S = 10


def seed(path: Path, leases: int, hours: float, now) -> int:
    """Leases as a run's meter leaves them; returns the ledger's row count."""
    from fleet.money.budget import Price, to_micro
    from fleet.money.kept import hand_over
    from fleet.money.ledger import Ledger, iso
    from fleet.state.db import Database
    from tests.fixtures.ledger import FakeClock, _Lease, _Machine
    db = Database(path)
    clock = FakeClock(now - timedelta(hours=hours))
    ledger = Ledger(db, clock)
    price = Price(to_micro("32.77"), "aws on-demand table")
    for n in range(leases):
        lease = _Lease(f"l-{n}", "vision", "ana", "p4d.24xlarge", "aws",
                       [_Machine(f"l-{n}-m{i}", (0,)) for i in range(MACHINES)])
        db.execute("INSERT INTO leases (id, provider, template, project, owner, status, created_at, deadline,"
                   " max_deadline, heartbeat_ttl_s) VALUES (?,?,?,?,?,?,?,?,?,?)",
                   (lease.id, "aws", "p4d.24xlarge", "vision", "ana", "active", iso(clock()),
                    iso(now + timedelta(hours=8)), iso(now + timedelta(hours=9)), 300))
        clock.now = now - timedelta(hours=hours)
        segments = [ledger.open_segment(lease=lease, machine=m, price=price, run_id=f"r-{n}") for m in lease.machines]
        # lease 0: the controller died an hour ago; lease 1: the run ended and the lease is kept
        stop = now - timedelta(hours=1) if n == 0 else now
        while clock() + timedelta(seconds=TICK_S) <= stop:
            clock.advance(TICK_S)
            ledger.append(segments, clock())
        if n == 1:
            hand_over(ledger, segments, lease, clock())
    rows = db.execute("SELECT COUNT(*) AS n FROM ledger")[0]["n"]
    db.close()
    return int(rows)


def check_once(path: Path, now) -> float:
    """One tick's budget check: the project's and the user's month, as build_scopes reads them."""
    from fleet.money.budget import month_start
    from fleet.money.ledger import Ledger
    from fleet.money.reservations import Reservations
    from fleet.state.db import Database
    db = Database(path)
    try:
        clock = lambda: now   # noqa: E731 — a fixed moment: both sides check the same instant
        ledger, reservations = Ledger(db, clock), Reservations(db, clock)
        began = time.perf_counter()
        for scope in ({"project": "vision"}, {"owner": "ana"}):
            ledger.spent_micro(**scope, since=month_start(now), exclude_run="r-new")
            reservations.held_micro(**scope, exclude_run="r-new", now=now)
        return time.perf_counter() - began
    finally:
        db.close()


def measure(args) -> list[dict]:
    from fleet.models import utcnow
    now = utcnow()
    with tempfile.TemporaryDirectory(prefix="fleet-bench-budget-") as tmp:
        big, small = Path(tmp) / "big.db", Path(tmp) / "small.db"
        say(f"budget_check: seeding {args.leases} leases x {MACHINES} machines x {args.hours} h of ticks")
        rows = seed(big, args.leases, args.hours, now)
        reference = seed(small, args.leases, 2 / 60, now)   # each lease's first two minutes
        ours, ref = [], []
        for _ in range(args.samples):        # interleaved pairs
            ours.append(check_once(big, now))
            ref.append(check_once(small, now))
        say(f"budget_check: {rows:,} rows: {sorted(ours)[len(ours) // 2] * 1000:.1f} ms; "
            f"{reference:,} rows: {sorted(ref)[len(ref) // 2] * 1000:.1f} ms")
        return [row("ledger rows", rows, "rows", None, reference_rows=reference),
                median_row(f"budget check per meter tick, {rows:,} ledger rows", ours, "ms", None, scale=1000),
                ratio_row(f"same / {reference:,} rows", ours, ref, None)]


def main() -> int:
    parser = bench_parser(__doc__.splitlines()[0])
    parser.add_argument("--leases", type=int, default=3)
    parser.add_argument("--hours", type=float, default=24.0)
    args = parser.parse_args()
    check_samples(parser, args)
    if args.quick:
        args.samples, args.hours = 1, 0.5
    return run_bench("budget_check", args, lambda: measure(args),
                     [("budget check per meter tick", "ms", None)])


if __name__ == "__main__":
    sys.exit(main())
