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
CANARY = "hf-canary-4711"
# The experiment and every process above it on its node (fleet's node agent, Slurm's step):
# which of them hold the state URL or the store's secret key in their environment.
SCRIPT = r"""
echo probe-state=${FLEET_STATE_URL:-none} probe-secret=${AWS_SECRET_ACCESS_KEY:-none} probe-named=${HF_TOKEN:-none} \
  probe-plain=${RUN_DSN:-none}
p=$PPID
mine=yes       # $PPID is the command's own shell: the run's secrets are rightly in its environment
while [ "$p" -gt 1 ]; do
  pat="-e ^FLEET_STATE_URL=postgres -e ^AWS_SECRET_ACCESS_KEY= -e ^FLEET_RECORDS_KEY="
  [ "$mine" = yes ] || pat="$pat -e ^HF_TOKEN= -e ^RUN_DSN="
  if tr '\0' '\n' < /proc/$p/environ 2>/dev/null | grep -q $pat; then
    echo "probe-holder $(tr '\0' ' ' < /proc/$p/cmdline | cut -c1-120)"
  fi
  mine=no
  p=$(cut -d' ' -f4 /proc/$p/stat)
done
echo probe-end
"""


def test_the_experiment_on_the_compute_nodes_does_not_inherit_the_supervisors_secrets(
        login, tmp_path, postgres_url, aws_env, slurm_env):
    farm, host = login
    exp = _write_exp(tmp_path, farm, host, PROBE)
    (exp / "probe.sh").write_text(SCRIPT)
    toml = exp / "fleet.toml"
    # RUN_DSN: a secret only fleet.toml names (nothing in its name looks secret).
    toml.write_text(toml.read_text().replace("\n[slurm]", 'secrets = ["HF_TOKEN", "RUN_DSN"]\n\n[slurm]', 1))
    env = {**_laptop_env(farm, tmp_path, postgres_url), "HF_TOKEN": CANARY, "RUN_DSN": "dsn-canary-0815",
           "FLEET_RECORDS_KEY": "records-key-canary"}
    run_id = _up(exp, env)["run_id"]
    follow = run_fleet(["logs", run_id, "-f"], cwd=tmp_path, env=env, timeout=240)
    assert follow.returncode == 0, follow.stderr
    assert wait_until(lambda: _run_row(postgres_url, run_id).get("status") not in (None, "running"), 120)
    assert follow.stdout.count("probe-state=none") == 2, follow.stdout
    assert follow.stdout.count("probe-secret=none") == 2, follow.stdout
    assert follow.stdout.count("probe-end") == 2, follow.stdout
    assert "probe-holder" not in follow.stdout, follow.stdout
    # The run's named secret reaches the experiment though its supervisor is on the login node, and
    # is masked in the log that comes home (a supervisor that does not hold it could not mask it).
    assert follow.stdout.count("probe-named=***") == 2 and follow.stdout.count("probe-plain=***") == 2, follow.stdout
    assert CANARY not in follow.stdout and "dsn-canary-0815" not in follow.stdout
    shown = run_fleet(["runs", "show", run_id, "--json"], cwd=tmp_path, env=env)
    assert shown.returncode == 0 and CANARY not in shown.stdout, shown.stdout + shown.stderr
