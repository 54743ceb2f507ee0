-- Rendezvous ports (issue 13): each multi-node lease gets its own MASTER_PORT on the host of its
-- node 0, probed free there and claimed here before anything binds it, so two leases on one team
-- host (shared state database) never get the same port. The primary key is the guard: a second
-- claim of (host, port) does nothing and the allocator moves on to the next free port. A row stops
-- counting once its lease is no longer leasing/active (released by the run, `fleet down` or the
-- reaper): the allocator deletes such rows for the host it allocates on.
CREATE TABLE port_reservations (
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    lease_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (host, port)
);
CREATE INDEX port_reservations_lease ON port_reservations (lease_id);
