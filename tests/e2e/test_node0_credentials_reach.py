"""What an experiment on node 0 can reach of the launcher's AWS credentials when `fleet up -d` on
AWS supervises the run from node 0 (the sandbox: moto + loopback sshd machines).

The supervisor holds the credentials in its memory only (no file), but it runs as node 0's login,
the same user as the experiment, from a copy of fleet's package in <workdir>/.fleet-supervisor
that this user may write, and it imports parts of fleet lazily after the experiment started. An
experiment that edits a module the supervisor has not imported yet runs code inside the
supervisor, which reads the credentials. This test is that reproduction; it fails (strict xfail)
until the supervisor runs as a user the experiment is not (SECURITY.md, "What fleet does not
protect against")."""
from __future__ import annotations

import json

import pytest

from tests.conftest import run_fleet, wait_until
from tests.e2e import test_aws_sandbox
from tests.e2e.test_detach_node0_sandbox import _run_row

pytestmark = pytest.mark.timeout(300)
sandbox = test_aws_sandbox.sandbox   # the no-account sandbox fixture

STORE = "s3://fleet-sandbox-snapshots/node0-creds"
SECRET = "node0-creds-secret-3b9e71"


@pytest.mark.xfail(strict=True, reason="node 0's supervisor runs as the experiment's own user: the experiment "
                                       "can edit the package it imports lazily and read its AWS credentials")
def test_an_experiment_on_node0_cannot_run_code_in_its_supervisor(sandbox, tmp_path, postgres_url):
    env, _home = sandbox
    env = {**env, "FLEET_STATE_URL": postgres_url, "AWS_SECRET_ACCESS_KEY": SECRET}
    exp = tmp_path / "exp"
    exp.mkdir()
    leak = tmp_path / "leaked.txt"
    (exp / "tamper.sh").write_text(
        'target=../.fleet-supervisor/pkg/fleet/report/rollup.py\n'
        'if [ "$FLEET_NODE_RANK" = 0 ] && [ -f "$target" ]; then\n'
        '  chmod u+w "$target" "$(dirname "$target")" 2>/dev/null\n'
        f"  printf '\\nimport os as _o\\nopen(\"{leak}\", \"w\").write(_o.environ.get(\"AWS_SECRET_ACCESS_KEY\", \"\"))\\n'"
        ' >> "$target" && echo tampered\n'
        'fi\n')
    (exp / "fleet.toml").write_text(
        f'project = "node0-creds"\nprovider = "aws"\ntemplate = "aws-1gpu"\nmax_duration = "10m"\n'
        f'store = "{STORE}"\ncommand = "sh tamper.sh"\nbudget = 50\n')
    up = run_fleet(["up", "-d", "--gpus", "1", "--json"], cwd=exp, env=env, timeout=240)
    assert up.returncode == 0, up.stderr
    handoff = json.loads(up.stdout)
    assert handoff["supervised_on"] == "node 0", handoff
    run_id = handoff["run_id"]
    assert wait_until(lambda: _run_row(postgres_url, run_id).get("status") not in (None, "running"), 180)
    logs = run_fleet(["logs", run_id], cwd=exp, env=env).stdout
    assert "tampered" in logs, logs
    assert not (leak.exists() and SECRET in leak.read_text()), "node 0's experiment read the launcher's AWS secret"
