"""Which runs continue which: a resumed attempt's row names the run it continues (meta
`resumed_from`), so a second resume of the same run, at the same time or later, is seen. An attempt
still marked running whose controller provably died (killed mid-recovery, its supervisor's beat
silent) blocks nothing: `fleet reap` or `fleet down` ends it as lost in its own time."""
from __future__ import annotations

import json
from typing import Any

from ..errors import UsageError


MAX_CHAIN = 1000      # attempts followed from one run: recovery's restarts and resumes of resumes


def attempts_of(db, run_id: str, *, running_only: bool = False) -> list[dict[str, Any]]:
    """The rows (id, status, started_at, meta) of attempts that continue `run_id`, directly or through
    other attempts (recovery's R-a3 continues R-a2, which continues R), newest first: a resume of R
    while R-a3 runs is a second copy of the same training, however many links away."""
    found: list[dict[str, Any]] = []
    seen, frontier = {run_id}, [run_id]
    while frontier and len(seen) < MAX_CHAIN:
        parent = frontier.pop()
        for row in db.execute("SELECT id, status, started_at, meta FROM runs WHERE meta LIKE ?",
                              (f"%{json.dumps(parent)}%",)):
            try:
                meta = json.loads(row["meta"])
                if meta.get("resumed_from") != parent or row["id"] in seen:
                    continue
            except (ValueError, AttributeError, TypeError):
                continue
            seen.add(row["id"])
            frontier.append(row["id"])
            found.append({"id": row["id"], "status": row["status"], "started_at": row["started_at"], "meta": meta})
    if running_only:
        found = [a for a in found if a["status"] == "running"]
    return sorted(found, key=lambda a: str(a["started_at"] or ""), reverse=True)


def is_live(state, attempt: dict[str, Any]) -> bool:
    """A running attempt whose controller is alive, or not provably dead."""
    from ..lost_runs import alive_or_silent
    alive, _why = alive_or_silent(state, attempt, attempt["meta"].get("controller"))
    return attempt["status"] == "running" and alive is not False


def refuse_second_resume(state, run_id: str) -> None:
    """Inside the transaction that records a new attempt of `run_id`: none may be running already."""
    state.db.serialise(f"resume:{run_id}")
    running = [a for a in attempts_of(state.db, run_id, running_only=True) if is_live(state, a)]
    if running:
        other = running[0]["id"]
        raise UsageError(f"run {run_id} is already being resumed, as run {other}",
                         hint=f"`fleet attach {other}`, or `fleet down` it first")
