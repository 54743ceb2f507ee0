"""`fleet extend` on a kept Slurm lease, as a user types it, against the real test cluster: the
allocation's time limit (capped at first by the budget's end) is raised with the deadline, and a
shorter extension moves nothing earlier."""
from __future__ import annotations

import json
from datetime import datetime

import pytest

from fleet.providers.slurm.commands import LocalRunner, SlurmCommands
from tests.conftest import run_fleet

pytestmark = pytest.mark.timeout(300)


def test_extend_raises_the_time_limit_and_never_shortens(experiment, slurm_env, fleet_home, tmp_path):
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    (experiment / "fleet.toml").write_text(
        'project = "t"\ncommand = "true"\nprovider = "slurm"\ntemplate = "slurm-1gpu"\nmax_duration = "10m"\n'
        f'[slurm]\nworkdir = "{nodes}"\nprice_per_gpu_hour = 2\npoll = 0.5\n')
    # $0.05 at $2 per GPU-hour lasts 90 s: the allocation asks for --time=2 (minutes), not 10.
    up = run_fleet(["up", "--gpus", "1", "--budget", "0.05", "--keep", "1m", "--json"], cwd=experiment, timeout=240)
    assert up.returncode == 0, up.stderr[-3000:]
    lease = json.loads(up.stdout)["lease_id"]
    slurm = SlurmCommands(LocalRunner(slurm_env.env))
    [job] = [j for j in slurm.queue() if j.comment == f"fleet:lease={lease}"]
    try:
        assert job.time_limit_s == 120
        longer = run_fleet(["extend", lease, "5m"], cwd=experiment)
        assert longer.returncode == 0, longer.stderr
        assert slurm.job(job.job_id).time_limit_s >= 300
        shorter = run_fleet(["extend", lease, "1m"], cwd=experiment)
        assert shorter.returncode == 0, shorter.stderr
        later, kept = (datetime.fromisoformat(p.stdout.split(" ends at ")[1].strip()) for p in (longer, shorter))
        assert abs((kept - later).total_seconds()) < 5, (longer.stdout, shorter.stdout)   # still the later one
        assert slurm.job(job.job_id).time_limit_s >= 300
    finally:
        down = run_fleet(["down", lease], cwd=experiment)
    assert down.returncode == 0, down.stderr
