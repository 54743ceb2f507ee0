"""Run records: the hash-chained record store, its anchor outside the database, code pins, lineage (rerun, audit)."""
