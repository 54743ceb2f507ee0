"""Column repairs run after a migration's SQL (fleet/state/db.py), for changes plain SQL cannot make
on both databases whatever state an earlier fleet left: SQLite has no ALTER COLUMN, and a column
an earlier text of a migration lacked cannot be added with IF NOT EXISTS on SQLite."""
from __future__ import annotations

# hosts as 0004_team.sql makes it today, in its column order (SQLite rebuilds the table from it).
_HOSTS = [("name", "TEXT PRIMARY KEY"), ("address", "TEXT NOT NULL"), ("port", "INTEGER"), ("login", "TEXT"),
          ("key_path", "TEXT"), ("host_key", "TEXT"), ("gpus", "INTEGER"), ("gpu_model", "TEXT"),
          ("home", "TEXT"), ("workdir", "TEXT"), ("source", "TEXT NOT NULL DEFAULT 'cli'"),
          ("status", "TEXT NOT NULL DEFAULT 'unknown'"), ("status_detail", "TEXT"), ("checked_at", "TEXT"),
          ("added_at", "TEXT NOT NULL"), ("added_by", "TEXT NOT NULL")]
# 0003_ledger.sql's columns that became BIGINT (PostgreSQL's INTEGER is 32-bit: a month-long close
# row's duration_ms, or $2,148 in micro-dollars, overflows it).
_LEDGER_BIGINT = ["duration_ms", "rate_micro", "cost_micro", "idle_gpu_s"]


def _columns(db, table: str) -> dict[str, bool]:
    """{column: nullable} of a table as the database has it."""
    if db.dialect == "postgresql":
        rows = db.execute("SELECT column_name, is_nullable FROM information_schema.columns"
                          " WHERE table_schema = current_schema() AND table_name = ?", (table,))
        return {r["column_name"]: r["is_nullable"] == "YES" for r in rows}
    return {r["name"]: not r["notnull"] for r in db.execute(f"PRAGMA table_info({table})")}


def repair_edited_migrations(db) -> None:
    """Migration 12: hosts and ledger columns as 0003/0004 make them today (see its SQL file)."""
    hosts = _columns(db, "hosts")
    if db.dialect == "postgresql":
        for name, _ in _HOSTS:
            if name not in hosts:   # home/workdir: a database from before they were added to 0004
                db.execute(f"ALTER TABLE hosts ADD COLUMN {name} TEXT")
        db.execute("ALTER TABLE hosts ALTER COLUMN port DROP NOT NULL, ALTER COLUMN port DROP DEFAULT")
        db.execute("ALTER TABLE ledger " + ", ".join(f"ALTER COLUMN {c} TYPE BIGINT" for c in _LEDGER_BIGINT))
        return
    # SQLite stores any integer in 64 bits whatever the declared type: only hosts needs work, and a
    # NOT NULL is dropped only by rebuilding the table (nothing references hosts).
    if all(name in hosts for name, _ in _HOSTS) and hosts.get("port", True):
        return
    kept = [name for name, _ in _HOSTS if name in hosts]
    db.execute("CREATE TABLE hosts_repaired (" + ", ".join(f"{n} {t}" for n, t in _HOSTS) + ")")
    db.execute(f"INSERT INTO hosts_repaired ({', '.join(kept)}) SELECT {', '.join(kept)} FROM hosts")
    db.execute("DROP TABLE hosts")
    db.execute("ALTER TABLE hosts_repaired RENAME TO hosts")


AFTER = {12: repair_edited_migrations}
