"""`fleet up -d` on provider slurm with `[slurm] login` (a real sshd on loopback in front of the
real test cluster), a PostgreSQL state and an S3 store (moto): the run's supervisor goes to the
login node and leases from there. The launcher runs in a pid namespace of its own, torn down when
it returns (every process it started, its ssh connections included, is killed), and the 2-node run
still completes: recorded `succeeded`, every machine's ledger segment opened and closed, outputs in
the store, nothing of fleet's left in squeue, and `fleet logs RUN -f` from a second FLEET_HOME that
shares only the state follows it to its end. `fleet down LEASE` from the laptop stops such a run
over the login node's SSH and leaves nothing queued."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from fleet.providers.slurm.commands import LocalRunner, SlurmCommands
from tests.conftest import FLEET, run_fleet, wait_until
from tests.e2e.test_detach_node0_sandbox import _cmdline, _ledger, _run_row
from tests.fixtures.laptop import LAPTOP, skip_without_laptop
from tests.fixtures.second_computer import follow_to_the_end_from_a_second_computer
from tests.fixtures.slurm_exp import write_exp_on_the_login_node
from tests.fixtures.ssh_hosts import HostFarm, _restart_with_path

pytestmark = pytest.mark.timeout(420)

BUCKET = "fleet-slurm-login"
STORE = f"s3://{BUCKET}/runs"
COMMAND = ("sh -c 'echo started $FLEET_NODE_RANK; sleep 8; mkdir -p $FLEET_OUTPUT_DIR; "
           "echo result-$FLEET_NODE_RANK > $FLEET_OUTPUT_DIR/result.txt; echo finished $FLEET_NODE_RANK'")
LONG = ("sh -c 'echo started $FLEET_NODE_RANK; mkdir -p $FLEET_OUTPUT_DIR; echo early > "
        "$FLEET_OUTPUT_DIR/early.txt; sleep 300'")


@pytest.fixture
def login(tmp_path, slurm_env):
    """A login node: sshd on loopback whose sessions find the test cluster (its slurm.conf), as a
    real login node's own configuration does."""
    skip_without_laptop(" to tear the launcher's processes down")
    farm = HostFarm(tmp_path / "farm")
    host = farm.start("login")
    config = host.directory / "sshd_config"
    config.write_text("\n".join(line + f" SLURM_CONF={slurm_env.conf}" if line.startswith("SetEnv ") else line
                                for line in config.read_text().splitlines()) + "\n")
    host.pid = _restart_with_path(host.directory, host.pid, host.port, None)
    yield farm, host
    for pid in _supervisors(host):   # a test that failed half way: its supervisor must not outlive it
        os.kill(pid, signal.SIGKILL)
    farm.stop()


def _supervisors(host) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and "fleet.run.node_supervisor" in _cmdline(int(name)) \
                and str(host.directory) in _cmdline(int(name)):
            found.append(int(name))
    return found


def _write_exp(tmp_path, farm, host, command: str):
    import boto3
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    exp = tmp_path / "exp"
    exp.mkdir()
    me = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    (exp / "fleet.toml").write_text(
        f'project = "slurm-login-detach"\nprovider = "slurm"\ntemplate = "slurm-1gpu"\nmax_duration = "10m"\n'
        f'store = "{STORE}"\ncommand = "{command}"\n\n[slurm]\nlogin = "{me}@127.0.0.1"\nlogin_port = {host.port}\n'
        f'identity = "{farm.key}"\nknown_hosts = "{farm.home / ".ssh" / "known_hosts"}"\nworkdir = "{nodes}"\n'
        f'price_per_gpu_hour = 2\npoll = 0.5\nsupervisor_python = "{sys.executable}"\n')
    return exp


def _laptop_env(farm, tmp_path, postgres_url, name: str = "laptop-home") -> dict:
    # No SLURM_CONF: every Slurm command of the laptop's must go to the login node.
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    return {**env, "HOME": str(farm.home), "FLEET_HOME": str(tmp_path / name), "FLEET_STATE_URL": postgres_url}


def _up(exp, env) -> dict:
    up = subprocess.run([*LAPTOP, FLEET, "up", "-d", "--gpus", "2", "--json"], cwd=exp, env=env,
                        capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "supervisor stays on this computer" not in up.stderr, up.stderr
    handoff = json.loads(up.stdout)
    assert handoff["supervised_on"] == "login node", handoff
    return handoff


def _fleet_jobs(slurm_env) -> list:
    return [j for j in SlurmCommands(LocalRunner(slurm_env.env)).queue()
            if j.comment.startswith("fleet:lease=") and not j.state.finished]


def _ssh_clients_to(port: int) -> list[str]:
    out = []
    for name in os.listdir("/proc"):
        cmd = _cmdline(int(name)) if name.isdigit() else ""
        if cmd.split(" ")[0].endswith("ssh") and f"-p {port}" in cmd:
            out.append(f"{name}: {cmd[:160]}")
    return out


def _children(pid: int) -> list[str]:
    out = []
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            out.append(_cmdline(int(name)))
    return out


def test_detached_slurm_run_is_supervised_from_the_login_node_after_the_launcher_is_gone(
        login, tmp_path, postgres_url, aws_env, slurm_env):
    farm, host = login
    exp = _write_exp(tmp_path, farm, host, COMMAND)
    env = _laptop_env(farm, tmp_path, postgres_url)
    handoff = _up(exp, env)
    run_id, lease_id, pid = handoff["run_id"], handoff["lease_id"], handoff["supervisor_pid"]
    # Everything the launcher started is gone with its pid namespace: its ssh connections too.
    assert _ssh_clients_to(host.port) == [], _ssh_clients_to(host.port)
    # The supervisor runs on the login node, in its login's ~/.fleet-supervisor/<run>, and the node
    # steps' srun frontends are its own children there.
    assert "fleet.run.node_supervisor" in _cmdline(pid), _cmdline(pid)
    home = host.directory / "root"
    cwd = os.readlink(f"/proc/{pid}/cwd")
    assert cwd == f"{home}/.fleet-supervisor/{run_id}/exp", cwd
    assert oct(os.stat(os.path.dirname(cwd)).st_mode & 0o777) == "0o700"
    sruns = [c for c in _children(pid) if c.startswith("srun ") and "--overlap" in c]
    assert len(sruns) == 2, _children(pid)
    # Nothing secret in its command line or on disk there: the state URL and keys came on stdin.
    assert postgres_url not in _cmdline(pid)
    on_disk = b"".join(p.read_bytes() for p in (home / ".fleet-supervisor").rglob("*")
                       if p.is_file() and "/pkg/" not in str(p))
    assert postgres_url.encode() not in on_disk and b"AWS_SECRET_ACCESS_KEY" not in on_disk
    row = _run_row(postgres_url, run_id)
    assert row["lease_id"] == lease_id and row["meta"]["supervised_on"] == "login node", row
    assert row["meta"]["supervisor_dir"] == os.path.dirname(cwd), row["meta"]

    # A second computer that shares only the state follows the run to its end.
    other, elsewhere = follow_to_the_end_from_a_second_computer(run_id, env, tmp_path)

    assert wait_until(lambda: _run_row(postgres_url, run_id).get("status") not in (None, "running"), 120)
    row = _run_row(postgres_url, run_id)
    summary = row["meta"]["summary"]
    assert row["status"] == "succeeded" and summary["exit_code"] == 0, summary
    shown = run_fleet(["snapshot", "show", summary["output_snapshot"], "--store", STORE, "--json"], cwd=elsewhere,
                      env=other)
    assert shown.returncode == 0, shown.stderr
    paths = {e["path"] for e in json.loads(shown.stdout)["entries"]}
    assert {"node-0/result.txt", "node-1/result.txt"} <= paths, paths
    # The ledger: both machines' segments opened and closed, from the login node.
    rows = _ledger(postgres_url, run_id)
    machines = {f"{lease_id}-n0", f"{lease_id}-n1"}
    assert {r[0] for r in rows if r[1] == "open"} == machines == {r[0] for r in rows if r[1] == "close"}, rows
    assert {r[2] for r in rows if r[1] == "open"} == {r[2] for r in rows if r[1] == "close"}, rows
    assert wait_until(lambda: not _fleet_jobs(slurm_env), 60), _fleet_jobs(slurm_env)
    assert wait_until(lambda: not _cmdline(pid), 60), _cmdline(pid)
    # The login node keeps the supervisor's events and log only: fleet's package and FLEET_HOME went.
    assert sorted(os.listdir(os.path.dirname(cwd))) == ["events.jsonl", "supervisor.log"], os.listdir(
        os.path.dirname(cwd))


def test_fleet_down_from_the_laptop_stops_a_run_supervised_from_the_login_node(
        login, tmp_path, postgres_url, aws_env, slurm_env):
    farm, host = login
    exp = _write_exp(tmp_path, farm, host, LONG)
    env = _laptop_env(farm, tmp_path, postgres_url)
    handoff = _up(exp, env)
    run_id, lease_id, pid = handoff["run_id"], handoff["lease_id"], handoff["supervisor_pid"]
    assert wait_until(lambda: "started 1" in subprocess.run(
        [FLEET, "logs", run_id], cwd=exp, env=env, capture_output=True, text=True).stdout, 60)
    down = subprocess.run([*LAPTOP, FLEET, "down", lease_id], cwd=exp, env=env, capture_output=True, text=True,
                          timeout=200)
    assert down.returncode == 0, down.stdout + down.stderr
    assert f"asking the supervisor of run {run_id} on the login node" in down.stderr, down.stderr
    assert wait_until(lambda: _run_row(postgres_url, run_id).get("status") not in (None, "running"), 120)
    row = _run_row(postgres_url, run_id)
    assert row["status"] == "cancelled", row
    shown = run_fleet(["snapshot", "show", row["meta"]["summary"]["output_snapshot"], "--store", STORE, "--json"],
                      cwd=exp, env=env)
    assert {"node-0/early.txt", "node-1/early.txt"} <= {e["path"] for e in json.loads(shown.stdout)["entries"]}
    assert wait_until(lambda: not _fleet_jobs(slurm_env), 30), _fleet_jobs(slurm_env)   # COMPLETING at most a moment
    assert wait_until(lambda: not _cmdline(pid), 60), _cmdline(pid)
    rows = _ledger(postgres_url, run_id)
    assert {r[0] for r in rows if r[1] == "close"} == {f"{lease_id}-n0", f"{lease_id}-n1"}, rows


def test_a_login_node_python_too_old_or_without_fleets_dependencies_is_one_line_and_nothing_is_queued(
        login, tmp_path, postgres_url, aws_env, slurm_env):
    farm, host = login
    exp = _write_exp(tmp_path, farm, host, COMMAND)
    toml = (exp / "fleet.toml").read_text().replace(f'supervisor_python = "{sys.executable}"',
                                                    'supervisor_python = "/usr/bin/python3"')
    (exp / "fleet.toml").write_text(toml)
    probe = subprocess.run(["/usr/bin/python3", "-c", "import psycopg"], capture_output=True)
    if probe.returncode == 0:
        pytest.skip("/usr/bin/python3 has psycopg: no Python without fleet's dependencies here")
    up = run_fleet(["up", "-d", "--gpus", "2"], cwd=exp, env=_laptop_env(farm, tmp_path, postgres_url), timeout=120)
    assert up.returncode != 0
    assert "the login node's python (/usr/bin/python3) lacks" in up.stderr and "psycopg" in up.stderr, up.stderr
    assert _fleet_jobs(slurm_env) == [] and _supervisors(host) == []
    # A Python older than fleet's sources (stood in for by one that says it is 3.8): one line too.
    old = tmp_path / "python3.8"
    old.write_text("#!/bin/sh\nexec /usr/bin/python3 -c 'import sys; sys.version_info = (3, 8, 10); "
                   "exec(sys.argv[1])' \"$3\" \"$4\"\n")
    old.chmod(0o755)
    (exp / "fleet.toml").write_text(toml.replace('supervisor_python = "/usr/bin/python3"',
                                                 f'supervisor_python = "{old}"'))
    up = run_fleet(["up", "-d", "--gpus", "2"], cwd=exp, env=_laptop_env(farm, tmp_path, postgres_url), timeout=120)
    assert up.returncode != 0
    assert "the login node's Python is 3.8" in up.stderr and "needs 3.11 or later: set [slurm] supervisor_python" \
        in up.stderr, up.stderr
    assert _fleet_jobs(slurm_env) == [] and _supervisors(host) == []


def test_with_fleet_on_the_login_node_itself_the_background_supervisor_outlives_the_ssh_session(
        login, tmp_path, slurm_env, fleet_home):
    """[slurm] login unset: fleet runs on the login node, and `fleet up -d` leaves its supervisor
    there as a background process in a session of its own. The user's ssh session (with a
    terminal) ends, a hangup reaches the supervisor anyway, and the run still completes."""
    farm, host = login
    exp = write_exp_on_the_login_node(tmp_path, "slurm-on-login", COMMAND)
    import shlex
    me = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    remote = (f"cd {shlex.quote(str(exp))} && env FLEET_HOME={shlex.quote(str(fleet_home))} FLEET_USER=tester "
              f"{shlex.quote(FLEET)} up -d --gpus 2 --json")
    ssh = subprocess.run(["ssh", "-tt", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-i", str(farm.key),
                          "-o", f"UserKnownHostsFile={farm.home / '.ssh' / 'known_hosts'}", "-p", str(host.port),
                          f"{me}@127.0.0.1", remote], capture_output=True, text=True, timeout=300)
    assert ssh.returncode == 0, ssh.stdout + ssh.stderr
    text = ssh.stdout.replace("\r", "")
    handoff = json.JSONDecoder().raw_decode(text[text.index("\n{") + 1:])[0]
    run_id, pid = handoff["run_id"], handoff["supervisor_pid"]
    assert handoff["supervised_on"] == "this computer"
    assert "fleet runs on the login node itself" in ssh.stdout, ssh.stdout   # the one-line reason (-tt: one stream)
    assert "fleet.run.supervisor" in _cmdline(pid), _cmdline(pid)
    os.kill(pid, signal.SIGHUP)            # as a terminal's hangup would be, were it still in that session
    from fleet.state import open_state
    assert wait_until(lambda: open_state().get_run(run_id)["status"] != "running", 120)
    assert open_state().get_run(run_id)["status"] == "succeeded"
    logs = run_fleet(["logs", run_id], cwd=exp)
    assert "[0] finished 0" in logs.stdout and "[1] finished 1" in logs.stdout, logs.stdout
    assert wait_until(lambda: not _fleet_jobs(slurm_env), 60), _fleet_jobs(slurm_env)


def test_a_dead_supervisor_on_the_login_node_is_seen_and_fleet_down_ends_its_run_lost_with_nothing_queued(
        login, tmp_path, postgres_url, aws_env, slurm_env):
    farm, host = login
    exp = _write_exp(tmp_path, farm, host, LONG)
    env = {**_laptop_env(farm, tmp_path, postgres_url), "FLEET_SUPERVISOR_BEAT_S": "0.5"}
    handoff = _up(exp, env)
    run_id, lease_id, pid = handoff["run_id"], handoff["lease_id"], handoff["supervisor_pid"]
    os.kill(pid, signal.SIGKILL)   # as the OOM killer, or a login node's process reaper, would
    assert wait_until(lambda: "not been heard from" in subprocess.run(
        [FLEET, "status", "--json"], cwd=exp, env=env, capture_output=True, text=True).stdout, 60)
    down = subprocess.run([*LAPTOP, FLEET, "down", lease_id], cwd=exp, env=env, capture_output=True, text=True,
                          timeout=200)
    assert down.returncode == 0, down.stdout + down.stderr
    row = _run_row(postgres_url, run_id)
    assert row["status"] == "lost" and "not been heard from" in row["meta"]["summary"]["message"], row
    rows = _ledger(postgres_url, run_id)
    assert {r[0] for r in rows if r[1] == "close"} == {f"{lease_id}-n0", f"{lease_id}-n1"}, rows
    assert wait_until(lambda: not _fleet_jobs(slurm_env), 60), _fleet_jobs(slurm_env)


def test_a_node_failure_under_a_login_node_supervised_run_is_recovered_from_the_login_node(
        login, tmp_path, postgres_url, aws_env, slurm_env):
    """Recovery needs no laptop either: the login node's supervisor leases attempt 2 itself."""
    from tests.e2e.test_checkpoints import TRAIN_HELD_IN_ATTEMPT_1
    from tests.e2e.test_recovery_slurm import _bring_back, _scontrol
    farm, host = login
    exp = _write_exp(tmp_path, farm, host, "python3 train.py 60 0.1")
    (exp / "train.py").write_text(TRAIN_HELD_IN_ATTEMPT_1)   # attempt 1 is still running when its machine goes
    toml = (exp / "fleet.toml").read_text().replace(
        'command = ', 'checkpoint_interval = "1s"\nrecovery = "always"\nmax_restarts = 2\ncommand = ')
    (exp / "fleet.toml").write_text(toml)
    env = _laptop_env(farm, tmp_path, postgres_url)
    up = subprocess.run([*LAPTOP, FLEET, "up", "-d", "--gpus", "1", "--json"], cwd=exp, env=env,
                        capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    handoff = json.loads(up.stdout)
    run_id, lease_id, pid = handoff["run_id"], handoff["lease_id"], handoff["supervisor_pid"]
    assert handoff["supervised_on"] == "login node"
    assert wait_until(lambda: "attempt 1" in subprocess.run(
        [FLEET, "logs", run_id], cwd=exp, env=env, capture_output=True, text=True).stdout, 60)
    import time
    time.sleep(4)   # a few periodic checkpoint uploads (every 1 s)
    [job] = [j for j in _fleet_jobs(slurm_env) if j.comment == f"fleet:lease={lease_id}"]
    [failed] = job.nodes
    try:
        _scontrol(slurm_env, "update", f"nodename={failed}", "state=down", "reason=fleet-test-node-fail")
        # The verdict, with the attempt list, is the last attempt's (`<run>-a2`) row.
        assert wait_until(lambda: _run_row(postgres_url, f"{run_id}-a2").get("status") not in (None, "running"),
                          240), (_run_row(postgres_url, run_id), _run_row(postgres_url, f"{run_id}-a2"))
    finally:
        _bring_back(slurm_env, failed)
    assert _run_row(postgres_url, run_id)["status"] == "error"   # attempt 1: its node failed under it
    summary = _run_row(postgres_url, f"{run_id}-a2")["meta"]["summary"]
    assert summary["status"] == "succeeded" and [a["attempt"] for a in summary["attempts"]] == [1, 2], summary
    logs = run_fleet(["logs", f"{run_id}-a2"], cwd=exp, env=env).stdout
    resumed = int(logs.split("rank 0 attempt 2 resumed 1 from ")[1].split()[0])
    assert 0 < resumed < 60 and "rank 0 finished at 60" in logs, logs
    second = _run_row(postgres_url, f"{run_id}-a2")
    assert second["meta"]["supervised_on"] == "login node" and second["lease_id"] != lease_id, second
    assert wait_until(lambda: not _fleet_jobs(slurm_env), 60), _fleet_jobs(slurm_env)
    assert wait_until(lambda: not _cmdline(pid), 60), _cmdline(pid)
