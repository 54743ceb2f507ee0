"""The supervisor on the Slurm login node holds the state URL (with its password) and the store's
keys in its own environment, handed on stdin. What it runs there (sbatch, salloc, the node steps'
srun) must not inherit them: Slurm exports the submitting environment into the job by default, so
the experiment's processes on the compute nodes (and the cluster's job records) would hold them,
as they never did with the supervisor on the laptop."""
from __future__ import annotations

import pytest

from tests.conftest import run_fleet, wait_until
from tests.e2e.test_detach_node0_sandbox import _run_row
from tests.e2e import test_detach_slurm_login as detach
from tests.e2e.test_detach_slurm_login import _laptop_env, _up, _write_exp

login = detach.login   # its fixture: a login node (sshd on loopback) in front of the test cluster

pytestmark = pytest.mark.timeout(420)

PROBE = "sh probe.sh"
# The experiment and every process above it on its node (fleet's node agent, Slurm's step):
# which of them hold the state URL or the store's secret key in their environment.
SCRIPT = r"""
echo probe-state=${FLEET_STATE_URL:-none} probe-secret=${AWS_SECRET_ACCESS_KEY:-none}
p=$PPID
while [ "$p" -gt 1 ]; do
  if tr '\0' '\n' < /proc/$p/environ 2>/dev/null | grep -q -e '^FLEET_STATE_URL=postgres' -e '^AWS_SECRET_ACCESS_KEY='; then
    echo "probe-holder $(tr '\0' ' ' < /proc/$p/cmdline | cut -c1-120)"
  fi
  p=$(cut -d' ' -f4 /proc/$p/stat)
done
echo probe-end
"""


def test_the_experiment_on_the_compute_nodes_does_not_inherit_the_supervisors_secrets(
        login, tmp_path, postgres_url, aws_env, slurm_env):
    farm, host = login
    exp = _write_exp(tmp_path, farm, host, PROBE)
    (exp / "probe.sh").write_text(SCRIPT)
    env = _laptop_env(farm, tmp_path, postgres_url)
    run_id = _up(exp, env)["run_id"]
    follow = run_fleet(["logs", run_id, "-f"], cwd=tmp_path, env=env, timeout=240)
    assert follow.returncode == 0, follow.stderr
    assert wait_until(lambda: _run_row(postgres_url, run_id).get("status") not in (None, "running"), 120)
    assert follow.stdout.count("probe-state=none") == 2, follow.stdout
    assert follow.stdout.count("probe-secret=none") == 2, follow.stdout
    assert follow.stdout.count("probe-end") == 2, follow.stdout
    assert "probe-holder" not in follow.stdout, follow.stdout
