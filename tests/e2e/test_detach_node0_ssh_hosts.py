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
from pathlib import Path

import pytest

from tests.conftest import FLEET, processes_under, run_fleet, wait_until
from tests.e2e.test_detach_node0_sandbox import _cmdline, _ledger, _run_row
from tests.fixtures.laptop import LAPTOP, skip_without_laptop
from tests.fixtures.ssh_hosts import PYTHON, HostFarm, started_farm, toml_hosts

pytestmark = pytest.mark.timeout(300)

BUCKET = "fleet-node0-hosts"
STORE = f"s3://{BUCKET}/runs"
COMMAND = ("sh -c 'echo started $FLEET_NODE_RANK; sleep 6; mkdir -p $FLEET_OUTPUT_DIR; "
           "echo result-$FLEET_NODE_RANK > $FLEET_OUTPUT_DIR/result.txt; echo finished $FLEET_NODE_RANK'")


@pytest.fixture
def farm(tmp_path):
    with started_farm(tmp_path / "farm", ("ha", "hb"), login_keys=True) as farm:
        yield farm


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


def _unheld_slots(postgres_url: str, lease_id: str) -> list:
    """The lease's slots still taken with no deadline to free them at (a host that did not answer
    the release keeps its machine's until that machine's watchdog deadline)."""
    import psycopg
    with psycopg.connect(postgres_url) as db:
        return list(db.execute("SELECT host, slot FROM gpu_slots WHERE lease_id = %s AND released_at IS NULL"
                               " AND held_until IS NULL", (lease_id,)))


def _lease_status(postgres_url: str, lease_id: str) -> str:
    import psycopg
    with psycopg.connect(postgres_url) as db:
        return db.execute("SELECT status FROM leases WHERE id = %s", (lease_id,)).fetchone()[0]


def test_detached_run_on_team_hosts_is_supervised_from_node0s_host_after_the_launcher_is_gone(
        farm, tmp_path, postgres_url, aws_env):
    skip_without_laptop(" to tear the launcher's processes down")
    env = _env(farm, tmp_path, postgres_url, aws_env)
    # The launcher in a pid namespace: nothing it started can keep the run going once it returns.
    exp, up = _launch(farm, tmp_path, env, "node0-hosts", COMMAND)
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
    assert sorted(os.listdir(supervisor_dir)) == ["events.jsonl", "supervisor.log"], os.listdir(supervisor_dir)
    assert node0_host in farm.hosts
    assert wait_until(lambda: not [p for p in processes_under(farm.base / "hosts") if lease_id in p], 30), \
        processes_under(farm.base / "hosts")


def test_a_root_capable_experiment_login_on_node0_is_refused_and_the_lease_released(
        farm, tmp_path, postgres_url, aws_env):
    if os.geteuid() != 0:
        pytest.skip("the hosts' login is this process's user: root is what is refused")
    env = _env(farm, tmp_path, postgres_url, aws_env)
    hosts = [replace(h, supervisor_login="fleet-supervisor-absent") for h in farm.configs(gpus=1)]
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "fleet.toml").write_text(
        f'project = "node0-hosts-root"\nprovider = "ssh"\ntemplate = "hosts-1gpu"\nmax_duration = "10m"\n'
        f'python = "{PYTHON}"\nstore = "{STORE}"\ncommand = "true"\n\n' + toml_hosts(hosts))
    up = run_fleet(["up", "-d", "--gpus", "2"], cwd=exp, env=env, timeout=240)
    assert up.returncode != 0
    last = up.stderr.strip().splitlines()
    assert any("node 0's login root is root" in line for line in last), up.stderr
    import psycopg
    with psycopg.connect(postgres_url) as db:
        leases = list(db.execute("SELECT id, status FROM leases"))
    assert leases and all(status != "active" for _id, status in leases), leases
    assert all(not _slots(postgres_url, lease_id) for lease_id, _ in leases)
    for host in farm.hosts:
        keys = host.login_keys.read_text() if host.login_keys.exists() else ""
        assert "fleet-lease-" not in keys, keys


def _launch(farm, tmp_path, env, project: str, command: str, extra: str = "") -> tuple[Path, subprocess.CompletedProcess]:
    """`fleet up -d --gpus 2` on the farm's two hosts, launched from a pid namespace of its own (when
    it returns, the kernel kills everything the launcher left in it), the supervisor's login being
    this computer's user."""
    me = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    hosts = [replace(h, supervisor_login=me, supervisor_python=PYTHON) for h in farm.configs(gpus=1)]
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "fleet.toml").write_text(
        f'project = "{project}"\nprovider = "ssh"\ntemplate = "hosts-1gpu"\nmax_duration = "10m"\n'
        f'python = "{PYTHON}"\nstore = "{STORE}"\n{extra}command = "{command}"\n\n' + toml_hosts(hosts))
    up = subprocess.run([*LAPTOP, FLEET, "up", "-d", "--gpus", "2", "--json"], cwd=exp, env=env,
                        capture_output=True, text=True, timeout=240)
    assert up.returncode == 0, up.stdout + up.stderr
    return exp, up


def _start_long_run(farm, tmp_path, env, project: str) -> dict:
    exp, up = _launch(farm, tmp_path, env, project,
                      "sh -c 'echo started; mkdir -p $FLEET_OUTPUT_DIR; echo early > $FLEET_OUTPUT_DIR/early.txt; "
                      "sleep 300'")
    handoff = json.loads(up.stdout)
    assert handoff["supervised_on"] == "node 0", handoff
    assert wait_until(lambda: "started" in subprocess.run(
        [*LAPTOP, FLEET, "logs", handoff["run_id"]], cwd=exp, env=env, capture_output=True, text=True).stdout, 60)
    return {**handoff, "exp": exp}


def test_fleet_down_from_another_process_stops_a_team_host_run_supervised_from_node0(
        farm, tmp_path, postgres_url, aws_env):
    skip_without_laptop("")
    env = _env(farm, tmp_path, postgres_url, aws_env)
    run = _start_long_run(farm, tmp_path, env, "node0-hosts-down")
    run_id, lease_id, pid = run["run_id"], run["lease_id"], run["supervisor_pid"]
    down = subprocess.run([*LAPTOP, FLEET, "down", lease_id], cwd=run["exp"], env=env, capture_output=True,
                          text=True, timeout=180)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "asking the supervisor of run" in down.stderr, down.stderr
    assert wait_until(lambda: _run_row(postgres_url, run_id).get("status") not in (None, "running"), 120)
    row = _run_row(postgres_url, run_id)
    assert row["status"] == "cancelled", row
    shown = run_fleet(["snapshot", "show", row["meta"]["summary"]["output_snapshot"], "--store", STORE, "--json"],
                      cwd=run["exp"], env=env)
    assert {"node-0/early.txt", "node-1/early.txt"} <= {e["path"] for e in json.loads(shown.stdout)["entries"]}
    assert wait_until(lambda: not _slots(postgres_url, lease_id), 60)
    assert wait_until(lambda: not _cmdline(pid), 60), _cmdline(pid)
    for host in farm.hosts:
        assert f"fleet-lease-{lease_id}" not in host.login_keys.read_text(), host.name


def test_a_dead_supervisor_on_node0s_host_is_ended_lost_by_down_and_its_lease_key_revoked(
        farm, tmp_path, postgres_url, aws_env):
    import signal
    skip_without_laptop("")
    env = {**_env(farm, tmp_path, postgres_url, aws_env), "FLEET_SUPERVISOR_BEAT_S": "0.5"}
    run = _start_long_run(farm, tmp_path, env, "node0-hosts-gone")
    run_id, lease_id, pid = run["run_id"], run["lease_id"], run["supervisor_pid"]
    os.kill(pid, signal.SIGKILL)   # as the OOM killer would: no release, no revocation by it
    assert wait_until(lambda: "not been heard from" in subprocess.run(
        [*LAPTOP, FLEET, "status", "--json"], cwd=run["exp"], env=env, capture_output=True, text=True).stdout, 60)
    down = subprocess.run([*LAPTOP, FLEET, "down", lease_id], cwd=run["exp"], env=env, capture_output=True,
                          text=True, timeout=180)
    assert down.returncode == 0, down.stdout + down.stderr
    row = _run_row(postgres_url, run_id)
    assert row["status"] == "lost" and "not been heard from" in row["meta"]["summary"]["message"], row
    rows = _ledger(postgres_url, run_id)
    assert {r[0] for r in rows if r[1] == "close"} == {f"{lease_id}-n0", f"{lease_id}-n1"}, rows
    assert not _slots(postgres_url, lease_id)
    for host in farm.hosts:   # revoked by the release from this computer, not by the dead supervisor
        assert f"fleet-lease-{lease_id}" not in host.login_keys.read_text(), host.name
    assert wait_until(lambda: not [p for p in processes_under(farm.base / "hosts") if lease_id in p], 30), \
        processes_under(farm.base / "hosts")


def test_a_lost_host_ends_the_run_with_its_checkpoints_since_node0_leases_no_later_attempt(
        farm, tmp_path, postgres_url, aws_env):
    from tests.e2e.test_recovery_ssh_hosts import _power_off
    skip_without_laptop("")
    env = _env(farm, tmp_path, postgres_url, aws_env)
    exp, up = _launch(farm, tmp_path, env, "node0-hosts-lost", "sh -c 'echo started; sleep 300'",
                      'recovery = "always"\nmax_restarts = 2\n')
    handoff = json.loads(up.stdout)
    run_id, lease_id, pid = handoff["run_id"], handoff["lease_id"], handoff["supervisor_pid"]
    cwd = os.readlink(f"/proc/{pid}/cwd")
    [other] = [h for h in farm.hosts if not cwd.startswith(str(h.directory))]   # node 1's host
    assert wait_until(lambda: "started" in subprocess.run(
        [FLEET, "logs", run_id], cwd=exp, env=env, capture_output=True, text=True).stdout, 60)
    _power_off(other)
    # The attempt's own record first, then the run's verdict over it (recovery.py `_final`).
    assert wait_until(lambda: "attempts" in (_run_row(postgres_url, run_id).get("meta") or {}).get("summary", {}), 180)
    summary = _run_row(postgres_url, run_id)["meta"]["summary"]
    assert summary["status"] == "error" and [a["attempt"] for a in summary["attempts"]] == [1], summary
    assert "not resumed after attempt 1" in summary["message"], summary["message"]
    assert "holds a key for this lease's hosts only" in summary["message"], summary["message"]
    assert wait_until(lambda: not _unheld_slots(postgres_url, lease_id), 60), _slots(postgres_url, lease_id)
    assert {host for host, _slot in _slots(postgres_url, lease_id)} <= {other.name}   # only the cut-off one's
    assert wait_until(lambda: not _cmdline(pid), 60), _cmdline(pid)
    node0_host = next(h for h in farm.hosts if h is not other)
    assert f"fleet-lease-{lease_id}" not in node0_host.login_keys.read_text()
    import psycopg
    with psycopg.connect(postgres_url) as db:
        leases = [r[0] for r in db.execute("SELECT id FROM leases WHERE status = 'active'")]
    assert leases == [], leases   # nothing leased for an attempt 2


def test_a_host_whose_sshd_ignores_the_lease_key_is_refused_before_the_handoff(tmp_path, postgres_url, aws_env):
    farm = HostFarm(tmp_path / "farm")
    try:
        for name in ("ha", "hb"):
            farm.start(name)            # sshd reads only its own keys file, never ~/.ssh/authorized_keys
        env = _env(farm, tmp_path, postgres_url, aws_env)
        me = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
        hosts = [replace(h, supervisor_login=me) for h in farm.configs(gpus=1)]
        exp = tmp_path / "exp"
        exp.mkdir()
        (exp / "fleet.toml").write_text(
            f'project = "node0-hosts-nokey"\nprovider = "ssh"\ntemplate = "hosts-1gpu"\nmax_duration = "10m"\n'
            f'python = "{PYTHON}"\nstore = "{STORE}"\ncommand = "true"\n\n' + toml_hosts(hosts))
        up = run_fleet(["up", "-d", "--gpus", "2"], cwd=exp, env=env, timeout=240)
        assert up.returncode != 0
        assert "does not accept the lease's key" in up.stderr and "Traceback" not in up.stderr, up.stderr
        import psycopg
        with psycopg.connect(postgres_url) as db:
            leases = list(db.execute("SELECT id, status FROM leases"))
        assert leases and all(status != "active" for _id, status in leases), leases
        assert all(not _slots(postgres_url, lease_id) for lease_id, _ in leases)
        for host in farm.hosts:   # the line it added was taken out again by the release
            keys = host.login_keys.read_text() if host.login_keys.exists() else ""
            assert "fleet-lease-" not in keys, keys
    finally:
        farm.stop()
        assert wait_until(lambda: not processes_under(farm.base / "hosts"), 30), processes_under(farm.base / "hosts")
