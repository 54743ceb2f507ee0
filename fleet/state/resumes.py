"""Which runs continue which: a resumed attempt's row names the run it continues (meta
`resumed_from`), so a second resume of the same run, at the same time or later, is seen."""
from __future__ import annotations

import json
from typing import Any

from ..errors import UsageError


def attempts_of(db, run_id: str, *, running_only: bool = False) -> list[dict[str, Any]]:
    """The rows (id, status) of attempts that continue `run_id`, newest first."""
    sql = "SELECT id, status, started_at, meta FROM runs WHERE meta LIKE ?" + \
        (" AND status = 'running'" if running_only else "") + " ORDER BY started_at DESC"
    found = []
    for row in db.execute(sql, (f"%{json.dumps(run_id)}%",)):
        try:
            if json.loads(row["meta"]).get("resumed_from") == run_id:
                found.append({"id": row["id"], "status": row["status"]})
        except (ValueError, AttributeError, TypeError):
            continue
    return found


def refuse_second_resume(db, run_id: str) -> None:
    """Inside the transaction that records a new attempt of `run_id`: none may be running already."""
    db.serialise(f"resume:{run_id}")
    running = attempts_of(db, run_id, running_only=True)
    if running:
        other = running[0]["id"]
        raise UsageError(f"run {run_id} is already being resumed, as run {other}",
                         hint=f"`fleet attach {other}`, or `fleet down` it first")
