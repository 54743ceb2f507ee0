-- Migrations 0003 and 0004 were edited after earlier fleets had applied them, and a migration runs
-- only once: a state database made by one of those fleets never got the new text. `fleet report`
-- then failed with "no such table: ledger_rollup_mark", a [[hosts]] entry on port 22 failed "NOT
-- NULL constraint failed: hosts.port", and on PostgreSQL a long ledger row overflowed a 32-bit
-- column. This one brings such a database to what 0003/0004 make today and changes nothing on a
-- database they made; the column changes are in fleet/state/repairs.py (they depend on what is there).
CREATE TABLE IF NOT EXISTS ledger_rollup (
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
CREATE TABLE IF NOT EXISTS ledger_rollup_mark (
    id INTEGER PRIMARY KEY,
    through_id BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger_damaged (
    id BIGINT PRIMARY KEY,
    start_at TEXT,
    reason TEXT NOT NULL
);
