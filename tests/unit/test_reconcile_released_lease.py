"""A detached run's supervisor died after its lease was already released (stopped, then `fleet down`
released the lease, then it was killed): the reconcile at the next command released nothing, dropped
the supervisor's identity file and left the run `running` for good. The run is recorded lost."""
from __future__ import annotations

import json
import subprocess

from fleet.lost_runs import controller_identity
from fleet.run.context import SilentEvents
from fleet.run.detach import reconcile
from fleet.run.supervisor import IDENTITY, supervisors_root
from fleet.state import open_state


def test_a_dead_supervisors_run_on_a_released_lease_is_recorded_lost(fleet_home):
    dead = subprocess.Popen(["true"])
    dead.wait()
    ident = {**controller_identity(), "pid": dead.pid, "start": "1"}
    state = open_state()
    try:
        state.db.execute("INSERT INTO leases (id, provider, template, project, owner, status, created_at, deadline,"
                         " max_deadline, heartbeat_ttl_s) VALUES (?,?,?,?,?,?,?,?,?,?)",
                         ("l-0released", "local", "local-1gpu", "p", "u", "released", "2026-12-05T00:00:00+00:00",
                          "2026-12-05T01:00:00+00:00", "2026-12-05T02:00:00+00:00", 60))
        state.create_run("r-gone", lease_id="l-0released", project="p", user="u", command="c", log_path="l",
                         output_dir="o", meta={"detached": True, "controller": ident})
    finally:
        state.close()
    d = supervisors_root() / "r-gone"
    d.mkdir(parents=True)
    (d / IDENTITY).write_text(json.dumps(ident))
    assert reconcile(SilentEvents()) == ["r-gone"]
    state = open_state()
    try:
        run = state.get_run("r-gone")
        assert run["status"] == "lost" and "supervisor" in (run["meta"]["summary"]["message"])
        assert run["meta"]["summary"]["machines"] == 0          # from the lease: `--resume` reads every node's
    finally:
        state.close()
