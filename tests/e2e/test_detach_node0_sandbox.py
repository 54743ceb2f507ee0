"""`fleet up -d` on AWS (the sandbox: moto + loopback sshd machines) puts the run's supervisor on
node 0 of its lease: the launching CLI, SIGKILLed at the handoff, is not needed for the run to complete — every
rank's lines reach `fleet logs -f` in a second FLEET_HOME that shares only the PostgreSQL state,
outputs land in the S3 store, the ledger closes every machine, and every instance ends terminated."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import FLEET, processes_under, run_fleet, wait_until
from tests.e2e.test_aws_sandbox import _instances, node0_sandbox
from tests.fixtures.second_computer import follow_to_the_end_from_a_second_computer

sandbox = node0_sandbox   # EC2's two users on node 0 where this computer allows it (root), else one

pytestmark = pytest.mark.timeout(300)

COMMAND = ("sh -c 'echo started $FLEET_NODE_RANK; sleep 5; mkdir -p $FLEET_OUTPUT_DIR; "
           "echo result-$FLEET_NODE_RANK > $FLEET_OUTPUT_DIR/result.txt; echo finished $FLEET_NODE_RANK'")
STORE = "s3://fleet-sandbox-snapshots/node0-runs"
SECRET = "node0-handoff-secret-6f1c2a"   # the launcher's AWS secret key (moto accepts any)


def _run_row(postgres_url: str, run_id: str) -> dict:
    import psycopg
    with psycopg.connect(postgres_url) as db:
        row = db.execute("SELECT status, meta, lease_id FROM runs WHERE id = %s", (run_id,)).fetchone()
    return {"status": row[0], "meta": json.loads(row[1] or "{}"), "lease_id": row[2]} if row else {}


def _ledger(postgres_url: str, run_id: str) -> list[tuple[str, str, str, str, str]]:
    import psycopg
    with psycopg.connect(postgres_url) as db:
        return list(db.execute("SELECT machine_id, kind, segment_id, start_at, end_at FROM ledger "
                               "WHERE run_id = %s ORDER BY id", (run_id,)))


def _state_dump(postgres_url: str) -> str:
    import psycopg
    with psycopg.connect(postgres_url) as db:
        tables = [r[0] for r in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        return "\n".join(str(db.execute(f'SELECT * FROM "{t}"').fetchall()) for t in tables)


def _latest_run(postgres_url: str) -> str:
    import psycopg
    with psycopg.connect(postgres_url) as db:
        return db.execute("SELECT id FROM runs ORDER BY started_at DESC LIMIT 1").fetchone()[0]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_detached_aws_run_is_supervised_from_node0_after_the_launcher_is_killed(sandbox, tmp_path,  # noqa: F811
                                                                            postgres_url):
    env, home = sandbox
    env = {**env, "FLEET_STATE_URL": postgres_url, "AWS_SECRET_ACCESS_KEY": SECRET}
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "fleet.toml").write_text(
        f'project = "node0"\nprovider = "aws"\ntemplate = "aws-1gpu"\nmax_duration = "10m"\n'
        f'store = "{STORE}"\ncommand = "{COMMAND}"\n')   # COMMAND has no double quote
    before = {i["InstanceId"] for i in _instances(env)}
    launcher = subprocess.Popen([FLEET, "up", "-d", "--gpus", "2"], cwd=exp, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
    seen = ""
    try:
        end = time.monotonic() + 240
        while "run:" not in seen and time.monotonic() < end and launcher.poll() is None:
            seen += launcher.stderr.readline()
        assert "handoff:" in seen and "run:" in seen, seen
    finally:
        launcher.kill()   # SIGKILL at the handoff: nothing of the launcher's own runs after this
        launcher.wait(timeout=30)
    run_id = _latest_run(postgres_url)
    row = _run_row(postgres_url, run_id)
    pid = row["meta"]["controller"]["pid"]
    # The supervisor runs inside node 0's machine (its sandbox directory), started over SSH: not a
    # child of the launcher, and not under this computer's FLEET_HOME supervisors/.
    assert "fleet.run.node_supervisor" in _cmdline(pid), _cmdline(pid)
    node0_root = os.readlink(f"/proc/{pid}/cwd")
    assert "/aws-sandbox/machines/" in node0_root and ".fleet-supervisor" in node0_root, node0_root
    assert row["meta"]["supervised_on"] in node0_root, (row["meta"], node0_root)
    assert not (home / "supervisors" / run_id).exists()
    # The credentials handed to node 0 are in its supervisor's memory only: no file on node 0 has them.
    supervisor_dir = Path(node0_root).parent
    files = [p for p in supervisor_dir.rglob("*") if p.is_file()]
    assert files and not [p for p in files if SECRET.encode() in p.read_bytes()]

    other, elsewhere = follow_to_the_end_from_a_second_computer(run_id, env, tmp_path)

    assert wait_until(lambda: _run_row(postgres_url, run_id).get("status") not in (None, "running"), 120)
    row = _run_row(postgres_url, run_id)
    summary = row["meta"]["summary"]
    assert row["status"] == "succeeded" and summary["exit_code"] == 0, summary
    assert row["meta"]["supervised_on"], row["meta"]
    # Outputs: in the run's store, as the snapshot the summary names.
    shown = run_fleet(["snapshot", "show", summary["output_snapshot"], "--store", STORE, "--json"], cwd=elsewhere,
                      env=other)
    assert shown.returncode == 0, shown.stderr
    paths = {e["path"] for e in json.loads(shown.stdout)["entries"]}
    assert {"node-0/result.txt", "node-1/result.txt"} <= paths, paths
    # Ledger: both machines billed from the lease's creation and closed.
    mine = [i for i in _instances(env) if i["InstanceId"] not in before]
    assert len(mine) == 2, mine
    instances = {i["InstanceId"] for i in mine}
    assert wait_until(lambda: len([r for r in _ledger(postgres_url, run_id) if r[1] == "close"]) >= 3, 60)
    rows = _ledger(postgres_url, run_id)
    assert {r[0] for r in rows if r[1] == "open"} == instances == {r[0] for r in rows if r[1] == "close"}, rows
    # Node 0 outlived the record (outputs snapshot, record, releasing the others): that time is one
    # more segment, starting where the run's closed, ending after the run was recorded as ended.
    node0 = row["meta"]["supervised_on"]
    opens = sorted((r[3], r[2]) for r in rows if r[0] == node0 and r[1] == "open")
    closes = {r[2]: r[4] for r in rows if r[0] == node0 and r[1] == "close"}
    assert len(opens) == 2 and set(closes) == {seg for _start, seg in opens}, rows
    (_first_start, first), (tail_start, tail) = opens
    assert tail_start == closes[first] and closes[tail] >= summary["ended_at"][:23], (rows, summary["ended_at"])
    # Every instance of the lease terminated in moto, node 0 (where the supervisor ran) included.
    assert wait_until(lambda: all(i["State"]["Name"] in ("terminated", "shutting-down")
                                  for i in _instances(env) if i["InstanceId"] not in before), 60)
    assert wait_until(lambda: not _cmdline(pid), 60)   # it ended with node 0
    assert SECRET not in _state_dump(postgres_url)      # nor the state: runs, leases, records, logs
    assert wait_until(lambda: not [p for p in processes_under(home) if "aws-sandbox/machines" in p], 60), \
        processes_under(home)


def test_down_from_the_laptop_asks_node0s_supervisor_to_stop_and_outputs_still_arrive(  # noqa: F811
        sandbox, tmp_path, postgres_url):
    env, home = sandbox
    env = {**env, "FLEET_STATE_URL": postgres_url, "FLEET_GRACE": "3"}
    exp = tmp_path / "exp"
    exp.mkdir()
    command = "sh -c 'mkdir -p $FLEET_OUTPUT_DIR; echo partial > $FLEET_OUTPUT_DIR/p.txt; echo started; sleep 300'"
    (exp / "fleet.toml").write_text(
        f'project = "node0-down"\nprovider = "aws"\ntemplate = "aws-1gpu"\nmax_duration = "10m"\n'
        f'store = "{STORE}"\ncommand = "{command}"\n')
    before = {i["InstanceId"] for i in _instances(env)}
    up = run_fleet(["up", "-d", "--gpus", "2", "--json"], cwd=exp, env=env, timeout=240)
    assert up.returncode == 0, up.stderr
    handoff = json.loads(up.stdout)
    run_id, lease_id, pid = handoff["run_id"], handoff["lease_id"], handoff["supervisor_pid"]
    assert handoff["supervised_on"] == "node 0" and "fleet.run.node_supervisor" in _cmdline(pid), handoff
    assert wait_until(lambda: "[0] started" in run_fleet(["logs", run_id], cwd=exp, env=env).stdout, 60)
    down = run_fleet(["down", lease_id], cwd=exp, env=env, timeout=240)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "on node 0" in down.stderr, down.stderr
    row = _run_row(postgres_url, run_id)
    assert row["status"] == "cancelled", row
    shown = run_fleet(["snapshot", "show", row["meta"]["summary"]["output_snapshot"], "--store", STORE, "--json"],
                      cwd=exp, env=env)
    assert shown.returncode == 0, shown.stderr
    assert "node-0/p.txt" in {e["path"] for e in json.loads(shown.stdout)["entries"]}
    assert wait_until(lambda: all(i["State"]["Name"] in ("terminated", "shutting-down")
                                  for i in _instances(env) if i["InstanceId"] not in before), 60)
    assert wait_until(lambda: not _cmdline(pid), 60)


def test_node0_resumes_the_run_on_new_machines_after_a_spot_interruption_of_another_node(  # noqa: F811
        sandbox, tmp_path, postgres_url):
    """Node 1 gets the reclaim notice: every rank checkpoints, node 0's supervisor releases node 1,
    leases attempt 2 from node 0 (with what the budget leaves after setting node 0's own time aside),
    restores the checkpoints and finishes; `fleet attach` in a second FLEET_HOME follows it through."""
    import boto3
    from fleet.providers.aws.sandbox import Sandbox
    from tests.e2e.test_checkpoints import TRAIN_HELD_IN_ATTEMPT_1
    env, home = sandbox
    env = {**env, "FLEET_STATE_URL": postgres_url, "FLEET_GRACE": "10"}
    exp = tmp_path / "exp"
    exp.mkdir()
    # Attempt 1 holds at step 5 until the notice: its 6 s of training once ended, on a loaded machine,
    # before the test had found node 1 to interrupt. Attempt 2 trains on to 60 at 0.02 s a step.
    (exp / "train.py").write_text(TRAIN_HELD_IN_ATTEMPT_1)
    (exp / "fleet.toml").write_text(
        f'project = "node0-spot"\nprovider = "aws"\ntemplate = "aws-1gpu"\nmax_duration = "10m"\n'
        f'store = "{STORE}"\ncommand = "python train.py 60 0.1 0.02"\nrecovery = "spot"\nmax_restarts = 2\n'
        f'budget = 50\n')
    before = {i["InstanceId"] for i in _instances(env)}
    up = run_fleet(["up", "-d", "--gpus", "2", "--json"], cwd=exp, env=env, timeout=240)
    assert up.returncode == 0, up.stderr
    handoff = json.loads(up.stdout)
    run_id, pid = handoff["run_id"], handoff["supervisor_pid"]
    assert handoff["supervised_on"] == "node 0", handoff

    def logs() -> str:
        return run_fleet(["logs", run_id], cwd=exp, env=env).stdout

    assert wait_until(lambda: "] rank 0 attempt 1" in logs() and "] rank 1 attempt 1" in logs(), 120), logs()
    node0 = _run_row(postgres_url, run_id)["meta"]["supervised_on"]
    [victim] = [i["InstanceId"] for i in _instances(env)
                if i["InstanceId"] not in before and i["InstanceId"] != node0 and i["State"]["Name"] == "running"]
    ec2 = boto3.client("ec2", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                       aws_access_key_id="sandbox", aws_secret_access_key="sandbox")
    reclaim = Sandbox(root=home / "aws-sandbox" / "machines").interrupt(victim, ec2, after_s=8)
    other = {**env, "FLEET_HOME": str(tmp_path / "second-home")}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    attach = run_fleet(["attach", run_id, "--json"], cwd=elsewhere, env=other, timeout=240)
    reclaim.join(timeout=30)
    assert attach.returncode == 0, attach.stderr[-3000:]
    summary = json.loads(attach.stdout)
    assert summary["status"] == "succeeded" and summary["attempt"] == 2, summary
    for rank in (0, 1):
        assert f"rank {rank} attempt 2 resumed 1 from " in attach.stderr, attach.stderr[-3000:]
        assert f"rank {rank} finished at 60" in attach.stderr
    assert wait_until(lambda: not _cmdline(pid), 60)      # the supervisor ended with node 0
    states = {i["InstanceId"]: i["State"]["Name"] for i in _instances(env) if i["InstanceId"] not in before}
    assert len(states) == 4 and set(states.values()) <= {"terminated", "shutting-down"}, states
    # Node 0 lived through attempt 2 as its supervisor: billed to the end, after the last record.
    rows = _ledger(postgres_url, run_id)
    tail = max(r[4] for r in rows if r[0] == node0 and r[1] == "close")
    assert tail >= summary["ended_at"][:23], (rows, summary["ended_at"])



def test_without_a_shared_state_the_supervisor_stays_here_and_says_why(sandbox, tmp_path):  # noqa: F811
    env, _home = sandbox
    env = {k: v for k, v in env.items() if k != "FLEET_STATE_URL"}
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "fleet.toml").write_text('project = "node0-sqlite"\nprovider = "aws"\ntemplate = "aws-1gpu"\n'
                                    'max_duration = "10m"\ncommand = "echo hello from $FLEET_NODE_RANK"\n')
    up = run_fleet(["up", "-d", "--gpus", "1", "--json"], cwd=exp, env=env, timeout=240)
    assert up.returncode == 0, up.stderr
    handoff = json.loads(up.stdout)
    assert handoff["supervised_on"] == "this computer", handoff
    assert "supervisor stays on this computer" in up.stderr and "SQLite" in up.stderr, up.stderr
    attach = run_fleet(["attach", handoff["run_id"]], cwd=exp, env=env, timeout=240)
    assert attach.returncode == 0 and "[0] hello from 0" in attach.stdout, attach.stdout + attach.stderr


def test_a_spot_notice_for_node0_ends_the_run_with_its_checkpoints_and_starts_no_attempt(  # noqa: F811
        sandbox, tmp_path, postgres_url):
    """Node 0 carries the supervisor: its own reclaim notice stops the run (every rank checkpoints)
    and no attempt 2 is leased that nothing would supervise."""
    import boto3
    from fleet.providers.aws.sandbox import Sandbox
    from tests.e2e.test_checkpoints import TRAIN
    env, home = sandbox
    env = {**env, "FLEET_STATE_URL": postgres_url, "FLEET_GRACE": "10"}
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "train.py").write_text(TRAIN)
    (exp / "fleet.toml").write_text(
        f'project = "node0-lost"\nprovider = "aws"\ntemplate = "aws-1gpu"\nmax_duration = "10m"\n'
        f'store = "{STORE}"\ncommand = "python train.py 600 0.1"\nrecovery = "spot"\nmax_restarts = 2\n')
    before = {i["InstanceId"] for i in _instances(env)}
    up = run_fleet(["up", "-d", "--gpus", "2", "--json"], cwd=exp, env=env, timeout=240)
    assert up.returncode == 0, up.stderr
    run_id = json.loads(up.stdout)["run_id"]
    assert wait_until(lambda: "] rank 1 attempt 1" in run_fleet(["logs", run_id], cwd=exp, env=env).stdout, 120)
    node0 = _run_row(postgres_url, run_id)["meta"]["supervised_on"]
    ec2 = boto3.client("ec2", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                       aws_access_key_id="sandbox", aws_secret_access_key="sandbox")
    # The run stops, checkpoints and releases about 2 s after the notice; the reclaim, waited out
    # below, comes well after, as the other spot tests have it.
    reclaim = Sandbox(root=home / "aws-sandbox" / "machines").interrupt(node0, ec2, after_s=10)
    attach = run_fleet(["attach", run_id, "--json"], cwd=exp, env=env, timeout=240)
    reclaim.join(timeout=60)
    assert attach.returncode != 0, attach.stdout
    summary = json.loads(attach.stdout)
    assert summary["status"] == "error" and "not resumed: node 0" in summary["message"], summary
    assert summary["checkpoints"] and f"--resume {run_id}" in summary["message"], summary
    assert "attempt 2" not in attach.stderr, attach.stderr[-2000:]
    mine = {i["InstanceId"]: i["State"]["Name"] for i in _instances(env) if i["InstanceId"] not in before}
    assert len(mine) == 2 and set(mine.values()) <= {"terminated", "shutting-down"}, mine   # none leased after
