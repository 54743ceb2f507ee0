"""Money: budgets and their scopes, reservations, the run-time meter, the append-only ledger, billing of unreported machines."""
