"""The rows `fleet status`'s table is made of, straight from SQLite: per lease, only the columns the
table shows, and per machine only the five fields of its stored document that the table, its notes
and the local liveness check read, picked out by SQLite (json_extract) instead of decoding every
whole document in Python (docs/control-plane-speed.md, issue 20's fourth sitting).

None (the caller then takes the general path, fleet/lease_status.py, which gives the same text) for
PostgreSQL, and for any state this cannot read as that path would: a document without a zone or
not an object, or a read that fails (the general path reports it as it always has).
"""
from __future__ import annotations

import json

# The lease's columns the table reads, then the machine's rank, its fields as one JSON array (null
# for a missing key, as for a null one), the JSON type of its "zone" and what its provider last
# said (machine_observations). FROM and WHERE as StateStore.status_records has them, so SQLite
# returns the rows in the same order. Every document fleet writes has a zone (Machine.zone, "" where
# it means nothing); one without (older, or not an object: damaged) is read by the general path,
# which tells a missing zone ("") from a null one, and refuses a damaged document.
_SQL = ("SELECT l.id, l.provider, l.template, l.owner, l.status, l.created_at, l.deadline, m.node_rank,"
        " json_extract(m.data, '$.instance_type', '$.spot', '$.zone', '$.gpu_slots', '$.provider_ref'),"
        " json_type(m.data, '$.zone'), o.state, o.detail, o.observed_at, o.fresh_until"
        " FROM leases l LEFT JOIN machines m ON m.lease_id = l.id"
        " LEFT JOIN machine_observations o ON o.machine_id = m.id WHERE {where}")
ID, PROVIDER, TEMPLATE, OWNER, STATUS, CREATED, DEADLINE = range(7)


def table_rows(store, user: str | None) -> list[tuple] | None:
    """[(lease row, machines, runs)] oldest lease first: the lease row's columns ID..DEADLINE; its
    machines in rank order as (instance_type, spot, zone, gpu_slots, provider_ref, observed: (state,
    detail, observed_at, fresh_until) or None); its runs as StateStore.status_records gives them."""
    if store.db.dialect != "sqlite":
        return None
    where, params = "l.status IN ('active', 'leasing')", []
    if user:
        where += " AND l.owner = ?"
        params.append(user)
    try:
        with store.db.mapped_reads():
            rows = store.db.rows(_SQL.format(where=where), params)
            leases: dict[str, tuple] = {}
            for row in rows:
                if row[8] is not None and row[9] is None:
                    return None
                if row[0] not in leases:
                    leases[row[0]] = (row, [], [])
            runs = store.status_runs(where, params, len(leases)) if leases else {}
    except Exception:  # noqa: BLE001 — the general path reads it again and reports what it finds
        return None
    fields = iter(json.loads("[" + ",".join([row[8] for row in rows if row[8] is not None]) + "]"))
    several = []
    for row in rows:
        if row[8] is None:                       # a lease with no machine (yet)
            continue
        kind, spot, zone, slots, ref = next(fields)
        machines = leases[row[0]][1]
        if len(machines) == 1:
            several.append(machines)
        machines.append((row[7], kind, spot, zone, slots, ref, None if row[10] is None else row[10:]))
    for machines in several:
        machines.sort(key=_rank)
    for lease_id, lease_runs in runs.items():
        leases[lease_id][2].extend(lease_runs)
    out = list(leases.values())
    out.sort(key=_created)                       # as status_records: the stored text, stable
    return [(row, [m[1:] for m in machines], lease_runs) for row, machines, lease_runs in out]


def _rank(machine: tuple):
    return machine[0]


def _created(lease: tuple):
    return lease[0][CREATED]
