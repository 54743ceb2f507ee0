-- Foundation: leases, their machines, and runs.
CREATE TABLE leases (
    id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    template TEXT NOT NULL,
    project TEXT NOT NULL,
    owner TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    deadline TEXT NOT NULL,
    max_deadline TEXT NOT NULL,
    keep_until TEXT,
    heartbeat_ttl_s INTEGER NOT NULL,
    released_at TEXT,
    meta TEXT NOT NULL DEFAULT '{{}}'
);
CREATE INDEX leases_status ON leases (status);
CREATE TABLE machines (
    id TEXT PRIMARY KEY,
    lease_id TEXT NOT NULL REFERENCES leases (id),
    node_rank INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX machines_lease ON machines (lease_id);
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    lease_id TEXT,
    project TEXT NOT NULL,
    owner TEXT NOT NULL,
    command TEXT NOT NULL,
    status TEXT NOT NULL,
    exit_code INTEGER,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    log_path TEXT,
    output_dir TEXT,
    meta TEXT NOT NULL DEFAULT '{{}}'
);
CREATE INDEX runs_lease ON runs (lease_id);
