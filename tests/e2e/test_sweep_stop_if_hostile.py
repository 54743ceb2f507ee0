"""--stop-if reads the running trial's metrics.json on its machine: what the experiment put there
must never stall the controller. A FIFO (or a link to /dev/zero, or a file of gigabytes) there made
the read never end: `cat` blocked on the FIFO (or streamed forever into the controller's memory,
since the read had no overall timeout while data kept coming), and as the read runs in the trial's
tick, its trial timeout never fired and the sweep hung."""
from __future__ import annotations

import json

from tests.conftest import run_fleet

# metrics.json becomes a FIFO nobody writes; then the trial would run for 5 minutes.
FIFO = ("import os, time; d = os.environ['FLEET_OUTPUT_DIR']; os.makedirs(d, exist_ok=True); "
        "os.mkfifo(d + '/metrics.json'); time.sleep(300)")


def test_a_fifo_as_metrics_json_does_not_stall_the_trial_timeout(experiment, fleet_home):
    (experiment / "fleet.toml").write_text('project = "t"\ncommand = "true"\ntemplate = "local-1gpu"\n'
                                           'max_duration = "10m"\n')
    proc = run_fleet(["sweep", "--json", "--param", "a=1", "--trial-timeout", "4s",
                      "--stop-if", "loss > 1", "--", "python3", "-c", FIFO], cwd=experiment, timeout=150)
    summary = json.loads(proc.stdout)
    [trial] = summary["trials"]
    assert trial["state"] == "stopped" and "trial timeout" in trial["reason"], proc.stderr[-3000:]
