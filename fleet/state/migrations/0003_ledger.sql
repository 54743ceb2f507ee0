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
-- Reports read sealed sums, not 100,000 rows: rows are verified once (digest) and added to
-- ledger_rollup per (day, project, owner, template, billed/shadow, run); ledger_rollup_mark says
-- which rows are in it; damaged rows found while sealing are kept in ledger_damaged and reported.
-- Derived data only: dropping these three tables' rows rebuilds them from the ledger.
CREATE TABLE ledger_rollup (
    day TEXT NOT NULL,
    project TEXT NOT NULL,
    owner TEXT NOT NULL,
    template TEXT NOT NULL,
    shadow INTEGER NOT NULL,
    run_key TEXT NOT NULL,
    entries BIGINT NOT NULL,
    cost_micro BIGINT NOT NULL,
    machine_ms BIGINT NOT NULL,
    gpu_ms BIGINT NOT NULL,
    util_gpu_ms BIGINT NOT NULL,
    util_weighted_ms DOUBLE PRECISION NOT NULL,
    idle_gpu_ms BIGINT NOT NULL,
    idle_cost_micro DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (day, project, owner, template, shadow, run_key)
);
CREATE TABLE ledger_rollup_mark (
    id INTEGER PRIMARY KEY,
    through_id BIGINT NOT NULL
);
CREATE TABLE ledger_damaged (
    id BIGINT PRIMARY KEY,
    start_at TEXT,
    reason TEXT NOT NULL
);
