-- Budget checks (every tick of a running meter) look for the open segments of live leases: their
-- `open` and `close` rows by lease, without reading every tick row of a long run (fleet/money/stranded.py).
CREATE INDEX ledger_lease_kind ON ledger (lease_id, kind);
