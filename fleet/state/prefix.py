"""Ids typed by people: a unique prefix names a row (`fleet logs r-2026120`), within bounds."""
from __future__ import annotations

TYPE_CHECKING = False   # see fleet/__init__.py: typing is not imported on `fleet status`'s path
if TYPE_CHECKING:
    from typing import Any

MIN_PREFIX = 3   # an id prefix shorter than this (or empty) matches nothing: `fleet rerun ''` must not pick a run
MAX_ID = 200     # longer than any id fleet makes (run ids are ~30 characters)


def prefix_match(db, table: str, column: str, prefix: str, order: str = "") -> list[dict[str, Any]]:
    """Rows whose id starts with `prefix`, taken literally (% and _ are not wildcards here)."""
    prefix = prefix.strip()
    if not MIN_PREFIX <= len(prefix) <= MAX_ID:
        return []   # too short to mean one row; longer than any id fleet makes (SQLite caps LIKE patterns)
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    sql = f"SELECT * FROM {table} WHERE {column} LIKE ? ESCAPE '\\'" + (f" ORDER BY {order}" if order else "")
    # SQLite's LIKE ignores ASCII case (PostgreSQL's does not): `l-abc` must not name a teammate's `L-ABC…`.
    return [r for r in db.execute(sql, (escaped + "%",)) if str(r[column]).startswith(prefix)]


def no_match(kind: str, given: str, rows: list[dict[str, Any]]) -> str:
    """`no run 'x'`, or, for a prefix of several, which ones it could mean."""
    if len(rows) < 2:
        return f"no {kind} {given!r}"
    shown = ", ".join(r["id"] for r in rows[:5]) + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")
    return f"{given!r} names more than one {kind} ({shown}): give more of the id"
