-- Issue 4: run records, append-only and hash-chained.
-- `body` is the canonical JSON of the record (including prev_hash); `hash` = sha256(body).
-- UNIQUE(prev_hash) keeps the chain linear: two writers racing for the same tip cannot both win.
CREATE TABLE run_records (
    seq {serial},
    run_id TEXT NOT NULL UNIQUE,
    prev_hash TEXT NOT NULL UNIQUE,
    hash TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL
);
-- Snapshots fleet pinned or produced, per run (a query index; the store is the source of truth).
CREATE TABLE run_snapshots (
    run_id TEXT NOT NULL,
    role TEXT NOT NULL,
    name TEXT NOT NULL,
    snapshot_id TEXT NOT NULL,
    store TEXT NOT NULL,
    PRIMARY KEY (run_id, role, name)
);
CREATE INDEX run_snapshots_snapshot ON run_snapshots (snapshot_id);
