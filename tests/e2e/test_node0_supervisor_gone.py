"""A detached AWS run whose supervisor on node 0 dies (SIGKILL, as the OOM killer would) is seen from
the laptop by its silence in the state: `fleet logs -f` returns saying so, `fleet status` shows it,
and `fleet down LEASE` releases the machines, closes their ledger segments and records the run as
`lost` at once, without waiting for the lease's deadline. The laptop's commands run in a pid
namespace of their own (`unshare`): the sandbox's node 0 is a process of this computer, and a
real laptop could not prove from /proc what runs on node 0 either."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from tests.conftest import FLEET, run_fleet, wait_until
from tests.e2e.test_aws_sandbox import _instances, node0_sandbox

sandbox = node0_sandbox   # EC2's two users on node 0 where this computer allows it (root), else one
from tests.e2e.test_detach_node0_sandbox import STORE, _cmdline, _ledger, _run_row

pytestmark = pytest.mark.timeout(300)

LAPTOP = ("unshare", "--pid", "--fork", "--mount-proc")


def _laptop(args: list[str], cwd, env: dict, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*LAPTOP, FLEET, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_a_dead_node0_supervisor_is_seen_by_its_silence_and_down_ends_the_run_as_lost(  # noqa: F811
        sandbox, tmp_path, postgres_url):
    if subprocess.run([*LAPTOP, "true"], capture_output=True).returncode != 0:
        pytest.skip("needs `unshare --pid` (root or user namespaces) to stand for a laptop apart from node 0")
    env, _home = sandbox
    env = {**env, "FLEET_STATE_URL": postgres_url, "FLEET_SUPERVISOR_BEAT_S": "0.5"}   # travels to node 0
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "fleet.toml").write_text(
        f'project = "node0-gone"\nprovider = "aws"\ntemplate = "aws-1gpu"\nmax_duration = "10m"\n'
        f'store = "{STORE}"\ncommand = "sh -c \'echo started; sleep 300\'"\n')
    before = {i["InstanceId"] for i in _instances(env)}
    up = run_fleet(["up", "-d", "--gpus", "2", "--json"], cwd=exp, env=env, timeout=240)
    assert up.returncode == 0, up.stderr
    handoff = json.loads(up.stdout)
    run_id, lease_id, pid = handoff["run_id"], handoff["lease_id"], handoff["supervisor_pid"]
    assert handoff["supervised_on"] == "node 0" and "fleet.run.node_supervisor" in _cmdline(pid), handoff
    follow = subprocess.Popen([*LAPTOP, FLEET, "logs", run_id, "-f"], cwd=exp, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    try:
        assert "started" in follow.stdout.readline()
        os.kill(pid, signal.SIGKILL)   # no finally-block on node 0: the run row stays `running`
        killed = time.monotonic()
        out, _ = follow.communicate(timeout=120)
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.communicate()
    assert follow.returncode == 0 and time.monotonic() - killed < 120
    last = out.strip().splitlines()[-1]
    assert f"run {run_id} is no longer supervised" in last and "not been heard from" in last, out
    assert _run_row(postgres_url, run_id)["status"] == "running"   # nothing ended it yet
    status = _laptop(["status", "--json"], exp, env)
    assert status.returncode == 0, status.stderr
    [run] = [r for v in json.loads(status.stdout)["leases"] if v["id"] == lease_id for r in v["runs"]]
    assert "not been heard from" in run.get("supervisor_gone", ""), run

    down = _laptop(["down", lease_id], exp, env)
    assert down.returncode == 0, down.stdout + down.stderr
    row = _run_row(postgres_url, run_id)
    assert row["status"] == "lost" and "not been heard from" in row["meta"]["summary"]["message"], row
    mine = {i["InstanceId"] for i in _instances(env) if i["InstanceId"] not in before}
    rows = _ledger(postgres_url, run_id)
    assert len(mine) == 2 and {r[0] for r in rows if r[1] == "close"} == mine, rows   # every second billed, closed
    assert wait_until(lambda: all(i["State"]["Name"] in ("terminated", "shutting-down")
                                  for i in _instances(env) if i["InstanceId"] in mine), 60)
