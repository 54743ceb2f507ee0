-- Issue 15: a detached run's rank logs in the shared state, so `fleet logs RUN -f` and `fleet
-- attach` from another computer (team mode: the same PostgreSQL) see every rank's output while it
-- runs, not only the supervisor's own computer. The supervisor appends one row per segment: up to
-- 64 KiB of one rank's lines, flushed about once a second (fleet/run/log_segments.py). Append-only;
-- `seq` orders a rank's segments, `id` the order they arrived in (one writer per run: the readers
-- page on it).
CREATE TABLE log_segments (
    id {serial},
    run_id TEXT NOT NULL,
    label TEXT NOT NULL,
    seq INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    data TEXT NOT NULL,
    UNIQUE (run_id, label, seq)
);
CREATE INDEX log_segments_run ON log_segments (run_id, id);
