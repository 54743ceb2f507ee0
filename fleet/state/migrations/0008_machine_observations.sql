-- Issue 20: what a provider last said about each machine, written whenever fleet asked it (`fleet
-- status` when the remembered answer was missing or stale, `fleet status --refresh`). `fleet status`
-- shows a remembered state until `fresh_until` (the provider's own time to live: AWS 60 s) instead
-- of asking EC2 again: one DescribeInstances at 1,000 instances costs seconds, and importing boto3
-- alone costs more than the whole status with no lease. `observed_at` is shown with the state.
CREATE TABLE machine_observations (
    machine_id TEXT PRIMARY KEY,
    lease_id TEXT NOT NULL,
    state TEXT NOT NULL,
    detail TEXT NOT NULL,
    observed_at TEXT NOT NULL,
    fresh_until TEXT NOT NULL
);
CREATE INDEX machine_observations_lease ON machine_observations (lease_id);
