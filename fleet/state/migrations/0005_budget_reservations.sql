-- Budget reservations (issues 7 and 8): the monthly project/user budget check and a claim on the
-- money are made in one transaction (PostgreSQL: an advisory lock per budget scope; SQLite: BEGIN
-- IMMEDIATE), so two laptops leasing at the same moment cannot both spend the last dollars.
-- A reservation holds amount_micro minus what its lease has already put in the ledger. It stops
-- counting when its run settles it (released_at set, spent_micro recorded), when its lease is no
-- longer leasing/active (released by `fleet down` or the reaper), when an active lease is past its
-- recorded deadline (a killed controller's machines end there), or at expires_at (the lease's
-- max_deadline). Rows are kept as history. Times: fixed-width ISO-8601 UTC text (as the ledger).
-- BIGINT: micro-dollars overflow PostgreSQL's 32-bit INTEGER past $2,147.
CREATE TABLE budget_reservations (
    id {serial},
    lease_id TEXT NOT NULL,
    run_id TEXT,
    project TEXT NOT NULL,
    owner TEXT NOT NULL,
    amount_micro BIGINT NOT NULL,
    minimum_micro BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    released_at TEXT,
    spent_micro BIGINT
);
CREATE INDEX budget_reservations_project ON budget_reservations (project) WHERE released_at IS NULL;
CREATE INDEX budget_reservations_owner ON budget_reservations (owner) WHERE released_at IS NULL;
CREATE INDEX budget_reservations_lease ON budget_reservations (lease_id);
