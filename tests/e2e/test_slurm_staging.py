"""`fleet up --provider slurm` where the nodes share a filesystem with the login node (the test
cluster's nodes all run on this host, so its node workdir really is shared): the pinned code and
[data] are staged once for the job, both ranks run the same copy, and it is gone after the run.
A `[slurm] shared_dir` the login node cannot write is one line, nothing queued."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleet.providers.slurm.commands import LocalRunner, SlurmCommands
from tests.conftest import run_fleet

pytestmark = pytest.mark.timeout(300)

SHOW = r'''
import os
rank = os.environ["FLEET_RANK"]
data = os.path.join(os.environ["FLEET_DATA"], "train", "rows.txt")
print(f"rank {rank} code={os.path.realpath(os.getcwd())} data={os.path.realpath(data)} "
      f"rows={open(data).read().strip()}", flush=True)
'''


def write(exp: Path, nodes: Path, extra: str = "") -> None:
    (exp / "show.py").write_text(SHOW)
    (exp / "data").mkdir(exist_ok=True)
    (exp / "data" / "rows.txt").write_text("1,2,3\n")
    (exp / "fleet.toml").write_text(
        'project = "t"\ncommand = "python3 show.py"\nprovider = "slurm"\ntemplate = "slurm-1gpu"\n'
        f'max_duration = "10m"\n[data]\ntrain = "data"\n[slurm]\nworkdir = "{nodes}"\npoll = 0.5\n{extra}')


def test_inputs_are_staged_once_for_nodes_that_share_a_filesystem(experiment, slurm_env, fleet_home, tmp_path):
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    write(experiment, nodes)
    proc = run_fleet(["up", "--gpus", "2", "--json"], cwd=experiment, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["machines"] == 2
    stage = [ln for ln in proc.stderr.splitlines() if "pinned inputs on" in ln]
    assert stage and "pinned inputs on 1 machine(s)" in stage[-1], proc.stderr[-3000:]
    assert "1 more machine(s) read them from a shared filesystem" in stage[-1]
    logs = "".join(p.read_text() for p in (Path(summary["run_dir"]) / "logs").iterdir())
    lines = sorted(ln.split(" ", 2)[2] for ln in logs.splitlines() if ln.startswith("rank "))
    assert len(lines) == 2 and lines[0] == lines[1], logs          # the same code and data paths, both ranks
    assert "rows=1,2,3" in lines[0] and f"-inputs/work" in lines[0] and f"-inputs/data/train" in lines[0]
    assert not list(nodes.glob("fleet-*-inputs")), list(nodes.iterdir())   # released with the job


def test_a_shared_dir_the_login_node_cannot_write_is_one_line(experiment, slurm_env, fleet_home, tmp_path):
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file, not a directory")
    write(experiment, nodes, f'shared_dir = "{blocked}"\n')
    proc = run_fleet(["up", "--gpus", "1"], cwd=experiment, timeout=240)
    assert proc.returncode != 0
    last = [ln for ln in proc.stderr.splitlines() if ln.strip()][-1]
    assert f"[slurm] shared_dir {blocked}: the login node cannot write there" in last, proc.stderr[-2000:]
    jobs = [j for j in SlurmCommands(LocalRunner(slurm_env.env)).queue() if not j.state.finished]
    assert not jobs, jobs
