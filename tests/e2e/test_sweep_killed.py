"""A sweep's controller killed outright (SIGKILL, the laptop's battery) writes no summary at its end:
`fleet runs compare --sweep` then said there was no such sweep, though the trials that had ended
are recorded runs with their outputs home. sweep.json is written as trials end, so the sweep's
trials so far are still found, and the file says the sweep did not finish."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

from tests.conftest import FLEET, processes_under, run_fleet, wait_until


def test_a_killed_sweeps_ended_trials_are_still_compared(experiment, fleet_home):
    (experiment / "fleet.toml").write_text('project = "t"\ncommand = "true"\ntemplate = "local-1gpu"\n'
                                           'max_duration = "10m"\n')
    script = ('mkdir -p "$FLEET_OUTPUT_DIR"; echo \'{{"acc": {x}}}\' > "$FLEET_OUTPUT_DIR/metrics.json"; '
              'if [ {x} = 2 ]; then echo trial-2-up; sleep 600; fi')
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "GITHUB_ACTIONS")}
    proc = subprocess.Popen([FLEET, "sweep", "--param", "x=1,2", "--", "sh", "-c", script], cwd=experiment,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen: list[str] = []

    def second_running() -> bool:
        seen.append(proc.stderr.readline())
        return any("trial-2-up" in s for s in seen) or proc.poll() is not None

    try:
        assert wait_until(second_running, timeout=120, interval=0), "".join(seen)[-3000:]
        sweep_id = re.search(r"sweep: (s-[0-9a-f-]+):", "".join(seen)).group(1)
        sweep_json = experiment / "runs" / sweep_id / "sweep.json"
        wait_until(sweep_json.exists, timeout=5)
        time.sleep(1.5)                        # the execute loop writes at most once a second
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        compare = run_fleet(["runs", "compare", "--sweep", sweep_id, "--format", "json"], cwd=experiment)
        assert compare.returncode == 0, compare.stderr
        rows = json.loads(compare.stdout)["runs"]
        assert [(r["trial"], r["status"], r["metrics"]) for r in rows] == [("t001", "succeeded", {"acc": 1.0})]
        summary = json.loads(sweep_json.read_text())
        assert summary["status"] == "running" and summary["exit_code"] == -1
        assert [t["state"] for t in summary["trials"]] == ["succeeded", "not-started"]
        assert "not ended when this was written" in summary["trials"][1]["reason"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        down = run_fleet(["down", "--all"], cwd=experiment)
        assert down.returncode == 0, down.stderr
    assert wait_until(lambda: processes_under(fleet_home) == [], timeout=30), processes_under(fleet_home)
