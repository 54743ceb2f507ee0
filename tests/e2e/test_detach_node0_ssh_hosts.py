"""`fleet up -d` on team hosts (the ssh provider: loopback sshd hosts) with a PostgreSQL state and an
S3 store (moto) puts the run's supervisor on node 0's host, as the host entry's `supervisor_login`:
the launcher runs in a pid namespace of its own, torn down when it exits (every process it started
is gone), and the run still completes — recorded `succeeded`, every machine's ledger segment opened
and closed, outputs in the S3 store, the GPU slots free, the lease's own key authorized on each host
login while it ran and revoked after, and the supervisor gone with its copy of that key."""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace

import pytest

from tests.conftest import FLEET, processes_under, run_fleet, wait_until
from tests.e2e.test_detach_node0_sandbox import _cmdline, _ledger, _run_row
from tests.fixtures.procs import live_processes_under
from tests.fixtures.ssh_hosts import PYTHON, HostFarm, toml_hosts

pytestmark = pytest.mark.timeout(300)

LAPTOP = ("unshare", "--pid", "--fork", "--mount-proc")
BUCKET = "fleet-node0-hosts"
STORE = f"s3://{BUCKET}/runs"
COMMAND = ("sh -c 'echo started $FLEET_NODE_RANK; sleep 6; mkdir -p $FLEET_OUTPUT_DIR; "
           "echo result-$FLEET_NODE_RANK > $FLEET_OUTPUT_DIR/result.txt; echo finished $FLEET_NODE_RANK'")


@pytest.fixture
def farm(tmp_path):
    farm = HostFarm(tmp_path / "farm")
    for name in ("ha", "hb"):
        farm.start(name, login_keys=True)
    yield farm
    farm.stop()
    for host in farm.hosts:
        for pid, _cmd in live_processes_under(host.directory):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
    assert wait_until(lambda: not processes_under(farm.base / "hosts"), 30), processes_under(farm.base / "hosts")


def _env(farm, tmp_path, postgres_url, aws_env) -> dict:
    import boto3
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    return {**os.environ, "HOME": str(farm.home), "FLEET_HOME": str(tmp_path / "laptop-home"),
            "FLEET_STATE_URL": postgres_url}


def _slots(postgres_url: str, lease_id: str) -> list:
    import psycopg
    with psycopg.connect(postgres_url) as db:
        return list(db.execute("SELECT host, slot FROM gpu_slots WHERE lease_id = %s AND released_at IS NULL",
                               (lease_id,)))


def _lease_status(postgres_url: str, lease_id: str) -> str:
    import psycopg
    with psycopg.connect(postgres_url) as db:
        return db.execute("SELECT status FROM leases WHERE id = %s", (lease_id,)).fetchone()[0]


def test_detached_run_on_team_hosts_is_supervised_from_node0s_host_after_the_launcher_is_gone(
        farm, tmp_path, postgres_url, aws_env):
    if subprocess.run([*LAPTOP, "true"], capture_output=True).returncode != 0:
        pytest.skip("needs `unshare --pid` (root or user namespaces) to tear the launcher's processes down")
    env = _env(farm, tmp_path, postgres_url, aws_env)
    me = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    hosts = [replace(h, supervisor_login=me, supervisor_python=PYTHON) for h in farm.configs(gpus=1)]
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "fleet.toml").write_text(
        f'project = "node0-hosts"\nprovider = "ssh"\ntemplate = "hosts-1gpu"\nmax_duration = "10m"\n'
        f'python = "{PYTHON}"\nstore = "{STORE}"\ncommand = "{COMMAND}"\n\n' + toml_hosts(hosts))
    # The launcher in a pid namespace: when `fleet up -d` returns, the namespace's init is gone and
    # the kernel kills everything left in it, so nothing the launcher started can keep the run going.
    up = subprocess.run([*LAPTOP, FLEET, "up", "-d", "--gpus", "2", "--json"], cwd=exp, env=env,
                        capture_output=True, text=True, timeout=240)
    assert up.returncode == 0, up.stdout + up.stderr
    handoff = json.loads(up.stdout)
    run_id, lease_id, pid = handoff["run_id"], handoff["lease_id"], handoff["supervisor_pid"]
    assert handoff["supervised_on"] == "node 0", handoff
    assert "supervisor stays on this computer" not in up.stderr, up.stderr
    # One login for the experiment and the supervisor here (this computer's user): fleet says so.
    assert "no supervisor login of its own" in up.stderr, up.stderr
    assert "authorizing a key for lease" in up.stderr, up.stderr
    # The supervisor runs under node 0's host, in the supervisor login's ~/.fleet-supervisor/<lease>.
    assert "fleet.run.node_supervisor" in _cmdline(pid), _cmdline(pid)
    cwd = os.readlink(f"/proc/{pid}/cwd")
    row = _run_row(postgres_url, run_id)
    node0_host = next(h for h in farm.hosts if cwd.startswith(str(h.directory)))
    assert f"/.fleet-supervisor/{lease_id}/" in cwd + "/", cwd
    assert row["meta"]["supervisor_dir"] == os.path.dirname(cwd), row["meta"]
    # The lease's own key is authorized on both hosts' logins while the run lasts (not the laptop's).
    for host in farm.hosts:
        assert f"fleet-lease-{lease_id}" in host.login_keys.read_text(), host.name
        assert "expiry-time=" in host.login_keys.read_text()

    assert wait_until(lambda: _run_row(postgres_url, run_id).get("status") not in (None, "running"), 180)
    row = _run_row(postgres_url, run_id)
    summary = row["meta"]["summary"]
    assert row["status"] == "succeeded" and summary["exit_code"] == 0, summary
    # Outputs: in the S3 store, as the snapshot the summary names, from a computer that shares only it.
    other = {**env, "FLEET_HOME": str(tmp_path / "second-home")}
    shown = run_fleet(["snapshot", "show", summary["output_snapshot"], "--store", STORE, "--json"], cwd=exp,
                      env=other)
    assert shown.returncode == 0, shown.stderr
    paths = {e["path"] for e in json.loads(shown.stdout)["entries"]}
    assert {"node-0/result.txt", "node-1/result.txt"} <= paths, paths
    logs = run_fleet(["logs", run_id], cwd=exp, env=other)
    assert "[0] finished 0" in logs.stdout and "[1] finished 1" in logs.stdout, logs.stdout + logs.stderr
    # Every machine billed and closed; the lease released, its slots free; the supervisor gone.
    machines = {f"{lease_id}-n0", f"{lease_id}-n1"}
    assert wait_until(lambda: _lease_status(postgres_url, lease_id) == "released", 60)
    rows = _ledger(postgres_url, run_id)
    assert {r[0] for r in rows if r[1] == "open"} == machines == {r[0] for r in rows if r[1] == "close"}, rows
    assert {r[2] for r in rows if r[1] == "open"} == {r[2] for r in rows if r[1] == "close"}, rows
    assert wait_until(lambda: not _slots(postgres_url, lease_id), 60), _slots(postgres_url, lease_id)
    assert wait_until(lambda: not _cmdline(pid), 60), _cmdline(pid)
    # The lease key: revoked on every host, and node 0's copy removed (its log stays).
    for host in farm.hosts:
        assert f"fleet-lease-{lease_id}" not in host.login_keys.read_text(), host.name
    supervisor_dir = os.path.dirname(cwd)
    assert not os.path.exists(f"{supervisor_dir}/home/leases/{lease_id}"), os.listdir(f"{supervisor_dir}/home")
    assert os.path.exists(f"{supervisor_dir}/supervisor.log")
    assert node0_host in farm.hosts
    assert wait_until(lambda: not [p for p in processes_under(farm.base / "hosts") if lease_id in p], 30), \
        processes_under(farm.base / "hosts")
