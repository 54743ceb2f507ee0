-- Issue 7: the cost ledger. Append-only: rows are never updated or deleted.
-- A machine's billing segment is a run of rows sharing segment_id: an `open` row (zero length) when
-- the machine is leased, a `tick` row per controller tick covering [start_at, end_at), and a `close`
-- row when it is released. A crash loses at most the tick in progress; `fleet reap`/`fleet down`
-- append the missing `close` row. `digest` covers every other column so a damaged row is reported.
-- duration_ms repeats end_at - start_at so reports aggregate in SQL without dialect date functions.
-- BIGINT: PostgreSQL's INTEGER is 32-bit, and a month-long close row (or $2,148 in micro-dollars) overflows it.
CREATE TABLE ledger (
    id {serial},
    segment_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    start_at TEXT NOT NULL,
    end_at TEXT NOT NULL,
    duration_ms BIGINT NOT NULL,
    rate_micro BIGINT NOT NULL,
    cost_micro BIGINT NOT NULL,
    price_source TEXT NOT NULL,
    shadow INTEGER NOT NULL,
    gpus INTEGER NOT NULL,
    gpu_util_permille INTEGER,
    idle_gpu_s BIGINT,
    project TEXT NOT NULL,
    owner TEXT NOT NULL,
    run_id TEXT,
    template TEXT NOT NULL,
    provider TEXT NOT NULL,
    lease_id TEXT NOT NULL,
    machine_id TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    digest TEXT NOT NULL,
    UNIQUE (segment_id, seq)
);
CREATE INDEX ledger_start ON ledger (start_at);
CREATE INDEX ledger_project ON ledger (project, start_at);
CREATE INDEX ledger_owner ON ledger (owner, start_at);
CREATE INDEX ledger_run ON ledger (run_id);
CREATE INDEX ledger_lease ON ledger (lease_id);
