"""`fleet up` on Slurm whose job is suspended mid-run (gang scheduling, PreemptMode=SUSPEND, an
operator's `scontrol suspend`) and resumed, against the real test cluster (tests/fixtures/slurm.py):
the run says so on its progress lines, `fleet status` keeps the lease up, and the command ends as it
would have, its run succeeded. It used to end the run as lost: "Slurm ended job N under the run:
SUSPENDED"."""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from fleet.providers.slurm.commands import LocalRunner, SlurmCommands
from fleet.providers.slurm.parsing import JobState
from tests.conftest import run_fleet, start_fleet_up, wait_for_line

pytestmark = pytest.mark.timeout(300)

# Runs until the test says stop (the nodes share this host's filesystem), counting its ticks.
TICKER = """\
import os, sys, time
print("ticking", flush=True)
n = 0
while not os.path.exists(sys.argv[1]) and n < 1200:
    n += 1
    time.sleep(0.1)
print("ticked", n, flush=True)
"""


def _scontrol(cluster, *args: str) -> None:
    done = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **cluster.env})
    assert done.returncode == 0, done.stderr


def test_a_run_whose_job_slurm_suspends_and_resumes_goes_on_and_succeeds(experiment, slurm_env, fleet_home, tmp_path):
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    stop = tmp_path / "stop"
    (experiment / "ticker.py").write_text(TICKER)
    (experiment / "fleet.toml").write_text(
        f'project = "t"\ncommand = "python3 ticker.py {stop}"\nprovider = "slurm"\ntemplate = "slurm-1gpu"\n'
        f'max_duration = "10m"\n\n[slurm]\nworkdir = "{nodes}"\nprice_per_gpu_hour = 2\npoll = 0.5\n')
    slurm = SlurmCommands(LocalRunner(slurm_env.env))
    proc, job_id, suspended = None, None, False
    try:
        proc = start_fleet_up(experiment, ["--gpus", "1", "--json"])
        seen = wait_for_line(proc, "ticking", timeout=120)
        [lease] = json.loads(run_fleet(["status", "--json"], cwd=experiment).stdout)["leases"]
        [job_id] = [j.job_id for j in slurm.queue() if j.comment == f"fleet:lease={lease['id']}"]

        _scontrol(slurm_env, "suspend", job_id)
        suspended = True
        seen += wait_for_line(proc, "fleet: suspended:", timeout=30)
        assert seen.splitlines()[-1] == (f"fleet: suspended: Slurm suspended job {job_id}: its processes are "
                                         "stopped and it keeps its nodes; the run goes on when Slurm resumes it")
        time.sleep(4)                  # past the SIGSTOP (Slurm sends it ~2 s after SIGTSTP); polls of the watch
        [during] = json.loads(run_fleet(["status", "--json"], cwd=experiment).stdout)["leases"]
        assert during["id"] == lease["id"] and during["health"] == "up", during
        assert slurm.job(job_id).state is JobState.SUSPENDED

        _scontrol(slurm_env, "resume", job_id)
        suspended = False
        seen += wait_for_line(proc, f"Slurm resumed job {job_id} after ", timeout=30)
        assert seen.splitlines()[-1].startswith("fleet: run: Slurm resumed job ")
        stop.write_text("")
        out, _ = proc.communicate(timeout=120)
    finally:
        if suspended:
            _scontrol(slurm_env, "resume", job_id)
        stop.write_text("")
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate()
    out = seen + out
    summary = json.loads(out[out.index("\n{") + 1:])
    assert summary["status"] == "succeeded" and proc.returncode == 0, out[-4000:]
    assert "under the run" not in out and "ticked" in out
    assert json.loads(run_fleet(["status", "--json"], cwd=experiment).stdout)["leases"] == []
