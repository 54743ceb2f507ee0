"""A sweep's warm pool on Slurm gives back the node it has no trial left for while the last trial
runs (fleet/sweep/shrink.py → fleet/providers/slurm/shrink.py), against the real test cluster
(tests/fixtures/slurm.py): 3 trials, 2 at a time on a 2-node allocation, the first much longer than
the others. Once the 2nd and 3rd are done on one node, that node leaves the job (squeue: the job on
one node) while the 1st still runs on the other, and the sweep still succeeds.
"""
from __future__ import annotations

import json
import subprocess

import pytest

from fleet.providers.slurm.commands import LocalRunner, SlurmCommands
from fleet.state import open_state
from tests.conftest import FLEET, run_fleet, wait_until

pytestmark = pytest.mark.timeout(420)


def _machines() -> dict[str, str]:
    """Machine id → Slurm node of every recorded machine of every active lease."""
    state = open_state()
    try:
        return {m.id: m.provider_ref["node"] for lease in state.list_leases() for m in lease.machines}
    finally:
        state.close()


def _fleet_jobs(slurm: SlurmCommands):
    return [j for j in slurm.queue() if j.comment.startswith("fleet:lease=") and not j.state.finished]


def test_an_idle_slurm_node_leaves_the_job_while_the_long_trial_runs(experiment, slurm_env, fleet_home, tmp_path):
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    (experiment / "fleet.toml").write_text(
        'project = "t"\ncommand = "true"\nprovider = "slurm"\ntemplate = "slurm-1gpu"\nmax_duration = "10m"\n'
        f'[slurm]\nworkdir = "{nodes}"\nprice_per_gpu_hour = 2\npoll = 0.5\n')
    slurm = SlurmCommands(LocalRunner(slurm_env.env))
    go = tmp_path / "go"
    # Trial 1 runs until the test lets it end (at most 5 minutes); trials 2 and 3 end at once.
    script = (f"if [ {{x}} = 1 ]; then echo long-trial-up; i=0; while [ ! -e {go} ] && [ $i -lt 1500 ]; "
              "do sleep 0.2; i=$((i+1)); done; fi; true")
    proc = subprocess.Popen([FLEET, "sweep", "--param", "x=1,2,3", "--parallel", "2", "--json", "--",
                             "sh", "-c", script], cwd=experiment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert wait_until(lambda: len(_machines()) == 2 or proc.poll() is not None, timeout=180, interval=0.5)
        machines = _machines()
        assert len(machines) == 2, proc.poll()
        (job,) = _fleet_jobs(slurm)
        assert job.node_count == 2
        # The pool drops to one machine while trial 1 still runs (it waits for `go`).
        assert wait_until(lambda: len(_machines()) == 1 or proc.poll() is not None, timeout=240, interval=0.5)
        assert proc.poll() is None, "the sweep ended before the idle machine was released"
        (kept,) = _machines()
        (gone,) = set(machines) - {kept}
        (job,) = _fleet_jobs(slurm)
        assert job.nodes == (machines[kept],) and job.node_count == 1, job     # the node went back to Slurm
        assert not list(nodes.glob(f"fleet-{gone}-*"))                          # its directory and secrets
        status = run_fleet(["status", "--json"], cwd=experiment)
        leases = json.loads(status.stdout)["leases"]
        assert len(leases) == 1 and [m["id"] for m in leases[0]["machines"]] == [kept], leases
        go.write_text("")
        out, err = proc.communicate(timeout=240)
    finally:
        go.write_text("")            # a failed assertion above still lets the sweep end and release
        try:
            if proc.poll() is None:
                proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            run_fleet(["down", "--all"], cwd=experiment)
    assert proc.returncode == 0, err[-3000:]
    assert "released 1 machine(s)" in err and "cannot release part of a lease" not in err, err[-3000:]
    summary = json.loads(out)
    assert [t["state"] for t in summary["trials"]] == ["succeeded"] * 3
    assert summary["machines"] == 2 and list(summary["released_early"]) == [gone]
    assert wait_until(lambda: not _fleet_jobs(slurm), 60, 0.5)
