"""What an experiment on node 0 can reach of the launcher's secrets when `fleet up -d` on AWS
supervises the run from node 0 (the sandbox: moto + loopback sshd machines).

node 0's supervisor holds the launcher's AWS credentials and the state URL in its memory. It runs
as node 0's supervisor login (EC2: `fleet-supervisor`), not as the experiment's (`fleet`), from a
copy of fleet in that user's own directory, with a clean environment and `python -I`. Here the
sandbox's machines log in as an unprivileged user of this computer (FLEET_AWS_SANDBOX_LOGIN), the
stand-in for `fleet`, and the supervisor as this (root) process's user, so the separation is real.

The experiment on node 0 then tries what worked while both were one user (SECURITY.md): find the
supervisor's process, read its environment, append code to a module of its package that the
supervisor imports later, read the lease's key beside it. The test sees that it found the process
(the attack ran) and that none of the rest worked."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.conftest import run_fleet, wait_until
from tests.e2e import test_aws_sandbox
from tests.e2e.test_detach_node0_sandbox import _run_row
from tests.fixtures.node0_attack import FIND_THE_SUPERVISOR

pytestmark = pytest.mark.timeout(300)
separated_sandbox = test_aws_sandbox.separated_sandbox   # machines log in as an unprivileged user (root only)

STORE = "s3://fleet-sandbox-snapshots/node0-creds"
SECRET = "node0-creds-secret-3b9e71"

ATTACK = FIND_THE_SUPERVISOR + r'''
for pkg in "$FLEET_MACHINE_ROOT/../.fleet-supervisor/pkg" "$FLEET_MACHINE_ROOT/.fleet-supervisor/pkg"; do
  target="$pkg/fleet/report/rollup.py"
  chmod u+w "$target" "$(dirname "$target")" 2>/dev/null
  if printf '\nimport os as _o\nopen("%s/leaked.txt", "w").write(_o.environ.get("AWS_SECRET_ACCESS_KEY", ""))\n' \
       "$drop" >> "$target" 2>/dev/null; then echo "tampered with $target"; fi
  if cat "$pkg"/../home/leases/*/id_ed25519 > "$drop/key.txt" 2>/dev/null; then echo "read the lease key"; fi
done
env > "$drop/env.txt"
echo "attack done"
'''


@pytest.fixture
def drop():
    """Where the experiment may write what it got (anyone may write here)."""
    path = Path(tempfile.mkdtemp(prefix="fleet-node0-drop-"))
    os.chmod(path, 0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_an_experiment_on_node0_cannot_reach_its_supervisor(separated_sandbox, drop, tmp_path, postgres_url):
    env, _home = separated_sandbox
    env = {**env, "FLEET_STATE_URL": postgres_url, "AWS_SECRET_ACCESS_KEY": SECRET}
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "attack.sh").write_text(ATTACK)
    (exp / "fleet.toml").write_text(
        f'project = "node0-creds"\nprovider = "aws"\ntemplate = "aws-1gpu"\nmax_duration = "10m"\n'
        f'store = "{STORE}"\ncommand = "sh attack.sh {drop}"\nbudget = 50\n')
    up = run_fleet(["up", "-d", "--gpus", "1", "--json"], cwd=exp, env=env, timeout=240)
    assert up.returncode == 0, up.stderr
    handoff = json.loads(up.stdout)
    assert handoff["supervised_on"] == "node 0", handoff
    run_id = handoff["run_id"]
    assert wait_until(lambda: _run_row(postgres_url, run_id).get("status") not in (None, "running"), 180)
    logs = run_fleet(["logs", run_id], cwd=exp, env=env).stdout
    assert _run_row(postgres_url, run_id)["status"] == "succeeded", logs
    # The attack ran, as the machine's login, and saw the supervisor's process (another user's)…
    login = env["FLEET_AWS_SANDBOX_LOGIN"]
    assert f"experiment runs as {login}" in logs and "attack done" in logs, logs
    assert "supervisor found" in logs and f"user {login}" not in logs, logs
    # …and got nothing of it: not its environment, its directory, its code or the lease's key.
    for took in ("read its environment", "saw its directory", "tampered", "read the lease key"):
        assert took not in logs, logs
    got = "".join(p.read_text(errors="replace") for p in drop.iterdir() if p.is_file())
    assert SECRET not in got and postgres_url not in got and "AWS_SECRET_ACCESS_KEY" not in got, got
    assert "BEGIN OPENSSH PRIVATE KEY" not in got
