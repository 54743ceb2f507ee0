"""Which runs continue which: a resumed attempt's row names the run it continues (meta
`resumed_from`), so a second resume of the same run, at the same time or later, is seen. An attempt
still marked running whose controller provably died (killed mid-recovery, its supervisor's beat
silent) blocks nothing: `fleet reap` or `fleet down` ends it as lost in its own time."""
from __future__ import annotations

import json
from typing import Any

from ..errors import UsageError


def _attempt_rows(db) -> dict[str, list[dict[str, Any]]]:
    """Every run that continues another, by the run it continues: one scan, walked in memory."""
    children: dict[str, list[dict[str, Any]]] = {}
    for row in db.execute("SELECT id, status, started_at, meta FROM runs WHERE meta LIKE ?", ('%"resumed_from"%',)):
        try:
            meta = json.loads(row["meta"])
            parent = meta.get("resumed_from")
        except (ValueError, AttributeError, TypeError):
            continue
        if isinstance(parent, str):
            children.setdefault(parent, []).append({"id": row["id"], "status": row["status"],
                                                    "started_at": row["started_at"], "meta": meta})
    return children


def attempts_of(db, run_id: str, *, running_only: bool = False) -> list[dict[str, Any]]:
    """The rows (id, status, started_at, meta) of attempts that continue `run_id`, directly or through
    other attempts (recovery's R-a3 continues R-a2, which continues R), newest first: a resume of R
    while R-a3 runs is a second copy of the same training, however many links away."""
    children = _attempt_rows(db)
    found, seen, frontier = [], {run_id}, [run_id]
    while frontier:
        for row in children.get(frontier.pop(), ()):
            if row["id"] not in seen:
                seen.add(row["id"])
                frontier.append(row["id"])
                found.append(row)
    if running_only:
        found = [a for a in found if a["status"] == "running"]
    return sorted(found, key=lambda a: str(a["started_at"] or ""), reverse=True)


def lineage(db, run_id: str) -> list[str]:
    """`run_id` and the runs it continues, back to the one the chain started from (last)."""
    path = [run_id]
    while True:
        rows = db.execute("SELECT meta FROM runs WHERE id = ?", (path[-1],))
        try:
            parent = json.loads(rows[0]["meta"]).get("resumed_from") if rows and rows[0]["meta"] else None
        except (ValueError, AttributeError, TypeError):
            parent = None
        if not isinstance(parent, str) or parent in path:
            return path
        path.append(parent)


def is_live(state, attempt: dict[str, Any]) -> bool:
    """A running attempt whose controller is alive, or not provably dead."""
    from ..lost_runs import alive_or_silent
    alive, _why = alive_or_silent(state, attempt, attempt["meta"].get("controller"))
    return attempt["status"] == "running" and alive is not False


def refuse_second_resume(state, run_id: str) -> None:
    """Inside the transaction that records a new attempt of `run_id`: no attempt of its whole lineage
    (from the run it started from) may be running already; the lock is the lineage's, so a resume of
    R and one of R-a2 at the same moment are serialised too."""
    path = lineage(state.db, run_id)      # what this attempt continues: not a second copy of it
    state.db.serialise(f"resume:{path[-1]}")
    running = [a for a in attempts_of(state.db, path[-1], running_only=True)
               if a["id"] not in path and is_live(state, a)]
    if running:
        other = running[0]["id"]
        raise UsageError(f"run {run_id} is already being resumed, as run {other}",
                         hint=f"`fleet attach {other}`, or `fleet down` it first")
