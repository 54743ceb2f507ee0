"""A kept lease's idle time on the ledger: every machine-second of a lease is billed exactly once.

A run's segments close when the run ends. When the lease is kept (`fleet up --keep`, or after a
`fleet run LEASE`), the same moment, in the same transaction, opens one *kept* segment per machine
(segment_id ending in `#kept`, no run_id: attributed to the lease, its project and user). It is
closed by whichever comes first:

- `fleet run LEASE`: closes it when the run's segments open (`close_kept`), reopens it after;
- `fleet down`: closes every open segment of the lease at min(now, its deadline);
- the deadline passing with nobody there: the machines' watchdog ended them at the deadline, so
  `settle_expired` (asked by every `fleet` command through a marker file, by `fleet down`,
  reports and budget checks) closes it at the deadline, never at a later 'now'.

No controller ticks a kept segment, so budget checks add what an open one has accrued up to
min(now, deadline) (`accruing_micro`): kept time counts against monthly budgets while it runs.
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from pathlib import Path

from .ledger import KEPT_SUFFIX, Ledger, OpenSegment, parse_iso

MARKERS = "kept"     # $FLEET_HOME/kept/<lease id>: {"deadline", "state_url", "state_db"}; cheap to list at start-up

_OPEN_KEPT_SQL = (
    "SELECT l.lease_id, l.segment_id, l.rate_micro, l.start_at, l.end_at, l.seq, s.deadline, s.status,"
    " s.released_at FROM ledger l JOIN leases s ON s.id = l.lease_id"
    f" WHERE l.run_id IS NULL AND l.segment_id LIKE '%{KEPT_SUFFIX}' AND NOT EXISTS (SELECT 1 FROM ledger c"
    " WHERE c.segment_id = l.segment_id AND c.kind = 'close')")


def hand_over(ledger: Ledger, closing: list[OpenSegment], lease, at: datetime, telemetry=None) -> int:
    """Close a run's segments at `at` and open the lease's kept segments at the same instant (one
    transaction: no gap, no overlap). Returns the cost the closing added."""
    prices = {seg.fixed["machine_id"]: seg.price for seg in closing}
    # close() advances the segments once its rows are written, but here those rows are durable only
    # when the outer transaction commits: a failure after them (open_kept, the commit itself) would
    # leave the segments marked closed in memory, and a retried end (the state wait) write nothing.
    before = [(seg.seq, seg.last_end, seg.closed) for seg in closing]
    try:
        with ledger.db.transaction():
            added = ledger.close(closing, at, telemetry=telemetry)
            open_kept(ledger, lease, at, prices)
    except BaseException:
        for seg, (seq, last_end, closed) in zip(closing, before):
            seg.seq, seg.last_end, seg.closed = seq, last_end, closed
        raise
    return added


def open_kept(ledger: Ledger, lease, at: datetime, prices: dict) -> None:
    """One kept segment per machine that has no open segment (another run on it bills it already)."""
    deadline = recorded_deadline(ledger, lease)
    if at >= deadline:
        return   # kept past its end: the machines are gone
    busy = {seg.fixed["machine_id"] for seg in ledger.open_segments(lease.id)}
    for machine in lease.machines:
        price = prices.get(machine.id)
        if price is None or machine.id in busy:
            continue
        ledger.open_segment(lease=lease, machine=machine, price=price, run_id=None, at=at, kept=True)
    write_marker(ledger.db, lease.id, deadline)


def close_kept(ledger: Ledger, lease, at: datetime) -> dict:
    """A run starts on the kept lease: its kept segments end at `at` (or at the deadline, if that
    passed first), and so do the open segments of an earlier run on it whose controller died (no
    row for STALE_S): from `at` the new run bills those machines, never both. Returns each machine's
    price, for the kept segments opened after the run."""
    from .reservations import STALE_S
    open_now = ledger.open_segments(lease.id)
    segments = [s for s in open_now if s.segment_id.endswith(KEPT_SUFFIX)]
    end = min(at, recorded_deadline(ledger, lease))
    if segments:
        ledger.close(segments, max(end, max(s.last_end or s.start for s in segments)))
    dead = [s for s in open_now if not s.segment_id.endswith(KEPT_SUFFIX)
            and (s.last_end or s.start) < at - timedelta(seconds=STALE_S)]
    for seg in dead:
        ledger.close([seg], max(end, seg.last_end or seg.start))
    if dead:   # their runs spend nothing more here: their reservations stop holding money
        from .reservations import Reservations
        for run_id in sorted({s.fixed.get("run_id") for s in dead if s.fixed.get("run_id")}):
            Reservations(ledger.db, ledger.clock).settle(lease.id, None, at=at, run_id=run_id)
    return {seg.fixed["machine_id"]: seg.price for seg in segments}


def settle_expired(db, now: datetime) -> list[str]:
    """Close the kept segments of leases whose deadline has passed (at the deadline), or that were
    released without closing them (at release). Returns the lease ids settled."""
    ends: dict[str, datetime] = {}
    for row in db.execute(_OPEN_KEPT_SQL):
        live = row["status"] in ("active", "leasing")
        end = parse_iso(row["deadline"])
        if not live and row["released_at"]:
            end = min(end, parse_iso(row["released_at"]))
        if end <= now or not live:
            ends[row["lease_id"]] = min(end, now)
    ledger = Ledger(db)
    for lease_id, end in ends.items():
        segments = ledger.open_segments(lease_id, kept_only=True)
        if segments:
            ledger.close(segments, max(end, max(s.last_end or s.start for s in segments)))
    return sorted(ends)


def accruing_micro(ledger: Ledger, *, project: str | None = None, owner: str | None = None,
                   since: datetime | None = None) -> int:
    """What open kept segments have cost since they opened (they get no ticks), up to
    min(now, deadline); with `since`, only the part after it. (By index: budget checks run on
    every tick of a meter, and a month of rows is no reason to read them all.)"""
    from .stranded import accrued, open_segments_of
    now = ledger.clock()
    deadlines = live_deadlines(ledger)
    if not deadlines:
        return 0
    return sum(accrued(start, max(last, since) if since is not None else last, min(now, deadlines[lease_id]), rate)
               for lease_id, _run, start, last, rate in open_segments_of(ledger.db, sorted(deadlines), kept=True,
                                                                          project=project, owner=owner))


def committed_micro(ledger: Ledger, *, project: str | None = None, owner: str | None = None,
                    exclude_lease: str | None = None) -> int:
    """What open kept segments will still cost from now to their lease's deadline. A kept lease's
    machines run to that deadline whatever else happens, so monthly budgets hold it as they hold a
    live run's reservation: without it, `--keep` after `--keep` each saw only the others' time so
    far, and four kept leases spent 3.7x a hard monthly budget."""
    from .stranded import accrued, open_segments_of
    now = ledger.clock()
    deadlines = {k: v for k, v in live_deadlines(ledger).items() if k != exclude_lease and v > now}
    if not deadlines:
        return 0
    return sum(accrued(start, max(last, now), deadlines[lease_id], rate)
               for lease_id, _run, start, last, rate in open_segments_of(ledger.db, sorted(deadlines), kept=True,
                                                                          project=project, owner=owner))


def live_deadlines(ledger: Ledger) -> dict[str, datetime]:
    deadlines = {}
    for row in ledger.db.execute("SELECT id, deadline FROM leases WHERE status IN ('active', 'leasing')"
                                 " AND deadline IS NOT NULL"):
        try:
            deadlines[row["id"]] = parse_iso(row["deadline"])
        except (TypeError, ValueError):
            continue   # a damaged deadline: `fleet status` shows it damaged; no budget check may crash
    return deadlines


def recorded_deadline(ledger: Ledger, lease) -> datetime:
    """The deadline the state holds now (`--keep` and `fleet extend` move it after the Lease was read)."""
    rows = ledger.db.execute("SELECT deadline FROM leases WHERE id = ?", (lease.id,))
    return parse_iso(rows[0]["deadline"]) if rows and rows[0]["deadline"] else lease.deadline


# -- the start-up check: any `fleet` command settles a kept lease whose deadline passed ---------------

def _markers() -> Path:
    home = os.environ.get("FLEET_HOME") or os.path.join(os.path.expanduser("~"), ".fleet")
    return Path(home) / MARKERS


def write_marker(db, lease_id: str, deadline: datetime) -> None:
    """Best effort: without it the kept time is still settled by `fleet down`, reports, budgets.
    A PostgreSQL state is written without its password (`settle_due` takes it from the configured
    URL), with the server, database and user it connected as, which that URL must reach again."""
    try:
        from ..state.db import Database
        root = _markers()
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fields: dict = {"deadline": deadline.isoformat(), "state_url": None}
        if isinstance(db, Database):
            fields["state_url"] = f"sqlite:///{db.path}"
        elif db.dialect == "postgresql":      # every state database declares its dialect (state/db.py)
            from ..state.postgres import without_password
            fields["state_url"] = without_password(db.url)
            try:
                fields["state_db"] = db.reached()
            except Exception:  # noqa: BLE001 — connection lost: the URL alone then says which database
                pass
        (root / lease_id).write_text(json.dumps(fields))
    except OSError:
        pass


def move_marker(db, lease_id: str, deadline: datetime) -> None:
    """`fleet extend` moved a kept lease's deadline: its marker follows (if it has one)."""
    if (_markers() / lease_id).exists():
        write_marker(db, lease_id, deadline)


def due_markers(now: datetime) -> list[tuple[Path, dict]]:
    """Markers whose deadline has passed: (file, its fields; {} when damaged)."""
    try:
        names = os.listdir(_markers())
    except OSError:
        return []
    due = []
    for name in names:
        path = _markers() / name
        try:
            data = json.loads(path.read_text())
            if parse_iso(data["deadline"]) <= now:
                due.append((path, data))
        except Exception:  # noqa: BLE001 — damaged (JSON nested too deep, not an object): settled and removed
            due.append((path, {}))
    return due


def settle_due(now: datetime) -> list[str]:
    """Every `fleet` command's start-up check: settle the kept leases whose marker says their
    deadline passed; the marker goes once its lease has nothing open (a later deadline rewrites it).
    A PostgreSQL lease's marker waits for a command configured for its database."""
    settled: list[str] = []
    for path, data in due_markers(now):
        from ..state import open_state
        url = data.get("state_url")
        url = url if isinstance(url, str) else None
        if url and url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
            _forget(path)   # its state is gone: nothing left to bill into
            continue
        if url and url.startswith(("postgresql://", "postgres://")):
            url = _configured_for(url)
            if url is None:
                continue
        state = open_state(url)
        try:
            if "state_db" in data and (state.db.dialect != "postgresql" or state.db.reached() != data["state_db"]):
                continue    # the same URL reached another server or database (PGHOST, PGPORT differ)
            settled += settle_expired(state.db, now)
            rows = state.db.execute(_OPEN_KEPT_SQL + " AND l.lease_id = ?", (path.name,))
            if rows:   # still kept: its deadline moved later than the marker knew
                write_marker(state.db, path.name, parse_iso(rows[0]["deadline"]))
            else:
                _forget(path)
        finally:
            state.close()
    return settled


def _configured_for(recorded: str) -> str | None:
    """This command's configured state URL (FLEET_STATE_URL, else ./fleet.toml) when it names the
    database a marker recorded (host, port, database, user), with the password the marker could
    not hold; None for any other: the kept time must never be settled into a database it is not in
    (`fleet down` and reports on its own database settle it meanwhile)."""
    from ..state import configured_state_url
    configured = os.environ.get("FLEET_STATE_URL") or configured_state_url()
    if not configured.startswith(("postgresql://", "postgres://")):
        return None
    names = _names(recorded)
    return configured if names is not None and _names(configured) == names else None


def _names(url: str) -> tuple | None:
    try:
        from psycopg.conninfo import conninfo_to_dict
        parts = conninfo_to_dict(url)
    except Exception:  # noqa: BLE001 — no driver, or a URL libpq cannot read: it names no database
        return None
    return tuple(parts.get(k) for k in ("host", "hostaddr", "port", "dbname", "user"))


def _forget(marker: Path) -> None:
    """Remove a settled marker; one that is not a file (a directory planted there) goes too."""
    try:
        marker.unlink(missing_ok=True)
    except IsADirectoryError:
        import shutil
        shutil.rmtree(marker, ignore_errors=True)
    except OSError:
        pass


def extension_cap_s(limits, lease, ledger: Ledger, now: datetime) -> tuple[float, str] | None:
    """How far from now the monthly budgets let a kept lease's deadline move (seconds), and the
    tightest budget's name; None when no monthly budget applies or the lease is not kept (a run on
    it is capped by that run's own meter). Its time to the current deadline is held already
    (committed_micro), so only the time past it must fit in what is left at the lease's rate."""
    from dataclasses import replace

    from .metering import build_scopes
    from .reservations import Reservations
    from .stranded import open_segments_of
    if limits.project_monthly is None and limits.user_monthly is None:
        return None
    rate = sum(r for *_rest, r in open_segments_of(ledger.db, [lease.id], kept=True))   # µ$/h, every machine
    if rate <= 0:
        return None
    scopes = build_scopes(replace(limits, run=None), project=lease.project, user=lease.user, ledger=ledger,
                          now=now, reservations=Reservations(ledger.db))
    tightest = min(scopes, key=lambda s: s.remaining(0))
    held_s = max(0.0, (recorded_deadline(ledger, lease) - now).total_seconds())
    return held_s + max(0, tightest.remaining(0)) * 3600 / rate, tightest.name
