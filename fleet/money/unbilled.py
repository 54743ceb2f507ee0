"""Bill machines that exist(ed) for a lease but have no cost segment at all.

The controller opens each machine's segment the moment the provider reports it (fleet/run/lease.py
`on_machine`). One window is left that no controller-side write can close: the provider has made
a machine (a directory and its sshd, an EC2 instance) and is killed before it could report it.
`fleet down` asks the provider (describe: it finds a lease's machines by name or tag) and appends,
for each machine with no ledger row, one segment (`open` + `close`, append-only like every other):

    start = when the provider says it came to exist, else when the lease began (earlier: an upper bound)
    end   = min(now, its own watchdog deadline where the provider knows it, else start + first deadline)

so the machine is billed, and never for longer than the first deadline it was given: it had no
heartbeat, so its watchdog ended it then. The price is the one the run resolved before leasing
(lease meta), else the machine's own, else $0 marked "unknown price".
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from .budget import Price, to_micro
from .ledger import Ledger
from ..models import Lease, MachineState, utcnow


@dataclass(frozen=True)
class _Unrecorded:
    id: str
    gpu_slots: tuple


def bill_unbilled(state, lease: Lease, found: list[MachineState], *, now: datetime | None = None) -> list[str]:
    """Append a bounded segment for every machine of `lease` (recorded or found by the provider)
    that has no ledger row. Returns the machine ids billed."""
    now = now or utcnow()
    ledger = Ledger(state.db)
    by_id = {s.machine_id: s for s in found}
    recorded = {m.id: m for m in lease.machines}
    meta = lease.meta or {}
    first_s = _count(meta.get("first_deadline_s")) or lease.heartbeat_ttl_s
    per_machine = _count(meta.get("gpus")) // max(1, _count(meta.get("machines")) or 1)
    run_id = _run_of(state, lease.id)
    with state.db.transaction():   # all or nothing: a half-billed lease would be billed again in full
        # What has no row is read under the lock that bills it: two `fleet down`s at once each found
        # the machine unbilled, and where their starts differed (one provider's describe saw it, the
        # other's found it gone) two segments billed it twice.
        state.db.serialise(f"bill unbilled {lease.id}")
        billed = {row["machine_id"] for row in state.db.execute(
            "SELECT DISTINCT machine_id FROM ledger WHERE lease_id = ?", (lease.id,))}
        missing = [i for i in dict.fromkeys([*recorded, *by_id]) if i not in billed]
        for machine_id in missing:
            st = by_id.get(machine_id)
            start = min((st.started_at if st and st.started_at else lease.created_at), now)
            end = st.deadline_at if st and st.deadline_at else start + timedelta(seconds=first_s)
            end = max(start, min(now, end))
            m = recorded.get(machine_id) or _Unrecorded(machine_id, tuple(range(per_machine)))
            seg = ledger.open_segment(lease=lease, machine=m, price=_price(lease, m), run_id=run_id, at=start)
            ledger.close([seg], end)
    return missing


def _count(value) -> int:
    """A count or seconds from a lease's meta; 0 for what a teammate's client (or a hand edit) put
    there instead: the machine is billed all the same, rather than the lease left unbilled."""
    from ..state.documents import stored_number
    return stored_number(value, low=0, high=10 ** 9, default=0)


def _price(lease: Lease, machine) -> Price:
    p = (lease.meta or {}).get("price")
    if isinstance(p, dict) and p.get("per_hour_micro") is not None:
        return Price(int(p["per_hour_micro"]), str(p.get("source") or "lease price"), bool(p.get("shadow")))
    rate = getattr(machine, "price_per_hour", None)
    return Price(to_micro(rate or 0), "machine price" if rate else "unknown price", lease.provider == "local")


def _run_of(state, lease_id: str) -> str | None:
    rows = state.db.execute("SELECT id FROM runs WHERE lease_id = ? ORDER BY started_at", (lease_id,))
    return rows[0]["id"] if rows else None
