"""Which runs continue which: a resumed attempt's row names the run it continues (meta
`resumed_from`), so a second resume of the same run, at the same time or later, is seen. An attempt
still marked running whose controller provably died (killed mid-recovery, its supervisor's beat
silent) blocks nothing: `fleet reap` or `fleet down` ends it as lost in its own time."""
from __future__ import annotations

import json
from typing import Any

from ..errors import UsageError


def attempts_of(db, run_id: str, *, running_only: bool = False) -> list[dict[str, Any]]:
    """The rows (id, status, meta) of attempts that continue `run_id`, newest first."""
    sql = "SELECT id, status, started_at, meta FROM runs WHERE meta LIKE ?" + \
        (" AND status = 'running'" if running_only else "") + " ORDER BY started_at DESC"
    found = []
    for row in db.execute(sql, (f"%{json.dumps(run_id)}%",)):
        try:
            meta = json.loads(row["meta"])
            if meta.get("resumed_from") == run_id:
                found.append({"id": row["id"], "status": row["status"], "meta": meta})
        except (ValueError, AttributeError, TypeError):
            continue
    return found


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
