-- Issue 15: a detached run's supervisor says it is alive. One row per supervised run (the run's
-- first id; its later attempts `<run>-aN` share it), rewritten every `period_s` seconds by the
-- supervisor (a local background process, or node 0 of an AWS lease) with the state's own clock
-- (`beat_epoch`: seconds since 1970 as the database server counts them, so no computer's clock
-- is compared with another's). `fleet status`, `fleet logs -f`, `fleet attach`, `fleet down` and
-- `fleet reap` on any computer treat a supervisor not heard from for several periods as gone
-- (fleet/run/supervisor_beat.py). The supervisor deletes its row when it ends on its own.
CREATE TABLE supervisor_beats (
    run_id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    period_s DOUBLE PRECISION NOT NULL,
    beat_epoch DOUBLE PRECISION NOT NULL
);
