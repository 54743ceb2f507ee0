"""`scripts/slurm_sandbox.py stop` killed every process with the cluster's SLURM_CONF in its
environment: after `. ./slurm.env` that is the shell that ran it and a `timeout` wrapped around it
(`bash: … Killed`). Its own ancestors are never the cluster's."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_the_stopping_process_and_its_ancestors_are_not_cluster_processes(tmp_path):
    conf = tmp_path / "slurm.conf"
    probe = ("import os, sys, types; sys.path.insert(0, %r)\n"
             "from tests.fixtures.slurm import cluster_processes\n"
             "c = types.SimpleNamespace(conf=%r, root=%r)\n"
             "found = cluster_processes(c)\n"
             "print(os.getppid() in found, os.getpid() in found)\n") % (str(Path.cwd()), str(conf), str(tmp_path / "none"))
    env = {**os.environ, "SLURM_CONF": str(conf)}         # as after `. ./slurm.env`
    out = subprocess.run(["sh", "-c", f'"{sys.executable}" -c "$0"; :', probe], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.split() == ["False", "False"], out.stderr
