-- Issue 8, team mode: a team's SSH GPU hosts, the GPU slots leased on them, and the people using fleet.
-- Portable SQL only (SQLite and PostgreSQL): TEXT times in ISO-8601 UTC, INTEGER flags, no `user` column
-- (a reserved word on PostgreSQL).

-- One row per host fleet may lease GPU slots on. `fleet hosts add` writes source='cli'; `[[hosts]]` in
-- fleet.toml are mirrored here with source='config' so slot reservation can lock one row per host.
-- host_key is the pinned public key ("ssh-ed25519 AAAA…"), NULL until learned or read from known_hosts.
-- port/login/key_path NULL: from ~/.ssh/config for the address, else 22 / the OS user / ~/.ssh/id_*.
-- gpus NULL: not declared and not discovered yet. home: the login's $HOME there, learnt by the probe;
-- workdir: where lease workdirs go (NULL: ~/.fleet-leases). status: up | down | unknown, from the last probe.
CREATE TABLE hosts (
    name TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    port INTEGER,
    login TEXT,
    key_path TEXT,
    host_key TEXT,
    gpus INTEGER,
    gpu_model TEXT,
    home TEXT,
    workdir TEXT,
    source TEXT NOT NULL DEFAULT 'cli',
    status TEXT NOT NULL DEFAULT 'unknown',
    status_detail TEXT,
    checked_at TEXT,
    added_at TEXT NOT NULL,
    added_by TEXT NOT NULL
);

-- A GPU slot given to a lease's machine. Rows are kept after release (released_at set) as history.
-- The partial unique index is the last line of defence: even if two writers got past the row locks,
-- the database refuses a second active reservation of the same slot on the same host.
CREATE TABLE gpu_slots (
    id {serial},
    host TEXT NOT NULL,
    slot INTEGER NOT NULL,
    lease_id TEXT NOT NULL,
    machine_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    reserved_at TEXT NOT NULL,
    released_at TEXT
);
CREATE UNIQUE INDEX gpu_slots_active ON gpu_slots (host, slot) WHERE released_at IS NULL;
CREATE INDEX gpu_slots_lease ON gpu_slots (lease_id);

-- Everyone who has leased through this state store (config `user` or the OS user).
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    first_seen_at TEXT NOT NULL,
    last_seen_at TEXT NOT NULL
);

-- `fleet status` (own leases) and `--all-users` both filter active leases by owner.
CREATE INDEX leases_owner ON leases (owner, status);
