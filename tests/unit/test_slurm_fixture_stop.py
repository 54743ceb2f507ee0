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


CLUSTER_STARTER = ("import sys; sys.path.insert(0, %r)\n"
                   "from tests.fixtures.slurm import ClusterUnavailable, cluster_or_skip\n"
                   "import _pytest.outcomes\n"
                   "gen = cluster_or_skip(nodes=1)\n"
                   "try:\n    c = next(gen)\n"
                   "except _pytest.outcomes.Skipped as exc:\n    print('skip', exc, flush=True); sys.exit()\n"
                   "print(c.to_json().replace(chr(10), ' '), flush=True)\n"
                   "import time; time.sleep(600)\n")


def test_a_killed_test_process_leaves_no_slurm_cluster_behind():
    """A cancelled CI run (its pytest workers SIGKILLed before teardown) left four test clusters'
    slurmctld, slurmd, slurmdbd and munged running: the session fixture's cluster is stopped and its
    directory removed once the process that started it is gone."""
    import json
    import signal
    import time
    import types

    import pytest

    from tests.fixtures.slurm import cluster_processes
    starter = subprocess.Popen([sys.executable, "-c", CLUSTER_STARTER % str(Path.cwd())], stdout=subprocess.PIPE,
                               text=True)
    try:
        line = starter.stdout.readline().strip()
        if line.startswith("skip") or not line:
            pytest.skip(line or "the cluster did not start")
        data = json.loads(line)
        c = types.SimpleNamespace(root=Path(data["root"]), conf=Path(data["conf"]))
        assert cluster_processes(c), "the cluster never ran: the test proves nothing"
    finally:
        starter.send_signal(signal.SIGKILL)       # no teardown runs
        starter.wait()
    end = time.monotonic() + 90
    while (cluster_processes(c) or c.root.exists()) and time.monotonic() < end:
        time.sleep(0.5)
    assert cluster_processes(c) == [] and not c.root.exists()
