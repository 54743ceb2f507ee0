"""Node 0 of a detached AWS run vanishes without notice (the sandbox terminates its instance in moto,
ends its machine — sshd and every process — and the supervisor with it, as a host failure would).
Nothing on node 0 can record that; from a laptop that cannot see node 0's processes (its own pid
namespace), the supervisor's silence is what tells: `fleet reap` ends the run as `lost` with a
one-line reason, terminates the other machine, and closes both machines' ledger segments (node 0's
too, though its instance was already gone). A run whose settings allow it is then resumed by the
reaper itself as attempt 2 (`recovery = "always"`, a restart left); with max_restarts used up it
stays lost and the reaper says why; by hand, `fleet up --resume RUN` (attached or `-d`) resumes it."""
from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from tests.conftest import run_fleet, wait_until
from tests.e2e.test_aws_sandbox import _instances, node0_sandbox

sandbox = node0_sandbox   # EC2's two users on node 0 where this computer allows it (root), else one
from tests.e2e.test_detach_node0_sandbox import STORE, _cmdline, _ledger, _run_row  # noqa: E402

from tests.e2e.test_node0_supervisor_gone import LAPTOP, _laptop  # noqa: E402  (a laptop in its own pid namespace)
from tests.fixtures.attempts import assert_attach_follows_to_attempt_2

pytestmark = pytest.mark.timeout(300)


def test_node0_vanishing_without_notice_is_reaped_as_lost_with_every_machine_ended_and_billed(  # noqa: F811
        sandbox, tmp_path, postgres_url):
    if subprocess.run([*LAPTOP, "true"], capture_output=True).returncode != 0:
        pytest.skip("needs `unshare --pid` (root or user namespaces) to stand for a laptop apart from node 0")
    import boto3
    from fleet.providers.aws.sandbox import Sandbox
    env, home = sandbox
    env = {**env, "FLEET_STATE_URL": postgres_url, "FLEET_SUPERVISOR_BEAT_S": "0.5"}   # travels to node 0
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "fleet.toml").write_text(
        f'project = "node0-vanished"\nprovider = "aws"\ntemplate = "aws-1gpu"\nmax_duration = "10m"\n'
        f'store = "{STORE}"\ncommand = "sh -c \'echo started $FLEET_NODE_RANK; sleep 300\'"\n')
    before = {i["InstanceId"] for i in _instances(env)}
    up = run_fleet(["up", "-d", "--gpus", "2", "--json"], cwd=exp, env=env, timeout=240)
    assert up.returncode == 0, up.stderr
    handoff = json.loads(up.stdout)
    run_id, lease_id, pid = handoff["run_id"], handoff["lease_id"], handoff["supervisor_pid"]
    assert handoff["supervised_on"] == "node 0" and "fleet.run.node_supervisor" in _cmdline(pid), handoff
    assert wait_until(lambda: "started 1" in run_fleet(["logs", run_id], cwd=exp, env=env).stdout, 120)
    node0 = _run_row(postgres_url, run_id)["meta"]["supervised_on"]
    ec2 = boto3.client("ec2", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                       aws_access_key_id="sandbox", aws_secret_access_key="sandbox")
    # The host is gone: the instance, its sshd and its processes, the supervisor among them.
    ec2.terminate_instances(InstanceIds=[node0])
    Sandbox(root=home / "aws-sandbox" / "machines").unbind([node0])
    if "fleet.run.node_supervisor" in _cmdline(pid):
        os.kill(pid, signal.SIGKILL)

    def gone() -> str:
        status = _laptop(["status", "--json"], exp, env)
        runs = [r for v in json.loads(status.stdout or "{}").get("leases", []) if v["id"] == lease_id
                for r in v["runs"]]
        return runs[0].get("supervisor_gone", "") if runs else ""
    assert wait_until(gone, 120), "fleet status never showed the supervisor gone"

    reap = _laptop(["reap"], exp, env)
    assert reap.returncode == 0, reap.stdout + reap.stderr
    row = _run_row(postgres_url, run_id)
    assert row["status"] == "lost", row
    message = row["meta"]["summary"]["message"]
    assert "not been heard from" in message and "\n" not in message, message
    mine = {i["InstanceId"] for i in _instances(env) if i["InstanceId"] not in before}
    rows = _ledger(postgres_url, run_id)
    assert len(mine) == 2 and {r[0] for r in rows if r[1] == "close"} == mine, rows   # every second billed, closed
    assert wait_until(lambda: all(i["State"]["Name"] in ("terminated", "shutting-down")
                                  for i in _instances(env) if i["InstanceId"] in mine), 60)
    status = json.loads(_laptop(["status", "--json"], exp, env).stdout)
    assert not [v for v in status["leases"] if v["id"] == lease_id], status


def _checkpointed_ranks(env: dict, run_id: str) -> int:
    done = subprocess.run([os.sys.executable, "-c",
                           "import sys; from fleet.snapshots import open_store; "
                           "from fleet.run.checkpoints import latest_snapshots; "
                           f"print(len(latest_snapshots(open_store({STORE!r}), {run_id!r}, [0, 1])))"],
                          env=env, capture_output=True, text=True, timeout=60)
    return int(done.stdout.strip() or 0)


def test_a_run_lost_with_node0_resumes_by_hand_from_every_nodes_checkpoint(  # noqa: F811
        sandbox, tmp_path, postgres_url):
    """Where the reaper does not resume a lost run (recovery = "never"), the user does: `fleet up
    --resume RUN` after the reaper ended the run lost restores each node's last periodic checkpoint
    (attempt 2). (With recovery = "always" the reaper starts attempt 2 itself, and a resume by hand
    while it runs is refused: two attempts billed two sets of machines.)"""
    import boto3
    from fleet.providers.aws.sandbox import Sandbox
    from tests.e2e.test_checkpoints import TRAIN
    env, home = sandbox
    env = {**env, "FLEET_STATE_URL": postgres_url, "FLEET_SUPERVISOR_BEAT_S": "0.5", "FLEET_GRACE": "10"}
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "train.py").write_text(TRAIN)
    (exp / "fleet.toml").write_text(
        f'project = "node0-vanished"\nprovider = "aws"\ntemplate = "aws-1gpu"\nmax_duration = "10m"\n'
        f'store = "{STORE}"\ncommand = "python train.py 150 0.1 0.02"\ncheckpoint_interval = "1s"\n'
        'recovery = "never"\nmax_restarts = 2\n')
    up = run_fleet(["up", "-d", "--gpus", "2", "--json"], cwd=exp, env=env, timeout=240)
    assert up.returncode == 0, up.stderr
    handoff = json.loads(up.stdout)
    run_id, pid = handoff["run_id"], handoff["supervisor_pid"]
    assert wait_until(lambda: _checkpointed_ranks(env, run_id) == 2, 120), "no checkpoint of both nodes"
    node0 = _run_row(postgres_url, run_id)["meta"]["supervised_on"]
    ec2 = boto3.client("ec2", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                       aws_access_key_id="sandbox", aws_secret_access_key="sandbox")
    ec2.terminate_instances(InstanceIds=[node0])
    Sandbox(root=home / "aws-sandbox" / "machines").unbind([node0])
    if "fleet.run.node_supervisor" in _cmdline(pid):
        os.kill(pid, signal.SIGKILL)

    def reaped() -> bool:   # `fleet reap` ends it once the supervisor has been silent for 6 beats
        _laptop(["reap"], exp, env)
        return _run_row(postgres_url, run_id)["status"] == "lost"
    assert wait_until(reaped, 120), _run_row(postgres_url, run_id)

    again = run_fleet(["up", "--resume", run_id, "--gpus", "2", "--json"], cwd=exp, env=env, timeout=240)
    out = again.stdout + again.stderr
    assert again.returncode == 0, out[-4000:]
    summary = json.loads(again.stdout)
    assert summary["status"] == "succeeded" and summary["attempt"] == 2, summary
    for rank in (0, 1):
        line = f"rank {rank} attempt 2 resumed 1 from "
        assert line in out, out[-4000:]
        assert 0 < int(out.split(line)[1].split()[0]) < 150, out[-4000:]   # its own last checkpoint
        assert f"rank {rank} finished at 150" in out


def _train_run(sandbox, tmp_path, postgres_url, max_restarts: int, recovery: str = "always"):
    """A 2-node detached training run checkpointing every second, then node 0 vanished with its
    supervisor once both nodes have a checkpoint in the store."""
    import boto3
    from fleet.providers.aws.sandbox import Sandbox
    from tests.e2e.test_checkpoints import TRAIN
    env, home = sandbox
    env = {**env, "FLEET_STATE_URL": postgres_url, "FLEET_SUPERVISOR_BEAT_S": "0.5", "FLEET_GRACE": "10"}
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "train.py").write_text(TRAIN)
    (exp / "fleet.toml").write_text(
        f'project = "node0-vanished"\nprovider = "aws"\ntemplate = "aws-1gpu"\nmax_duration = "10m"\n'
        f'store = "{STORE}"\ncommand = "python train.py 150 0.1 0.05"\ncheckpoint_interval = "1s"\n'
        f'recovery = "{recovery}"\nmax_restarts = {max_restarts}\n')
    before = {i["InstanceId"] for i in _instances(env)}
    up = run_fleet(["up", "-d", "--gpus", "2", "--json"], cwd=exp, env=env, timeout=240)
    assert up.returncode == 0, up.stderr
    handoff = json.loads(up.stdout)
    run_id, pid = handoff["run_id"], handoff["supervisor_pid"]
    assert wait_until(lambda: _checkpointed_ranks(env, run_id) == 2, 120), "no checkpoint of both nodes"
    node0 = _run_row(postgres_url, run_id)["meta"]["supervised_on"]
    ec2 = boto3.client("ec2", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                       aws_access_key_id="sandbox", aws_secret_access_key="sandbox")
    ec2.terminate_instances(InstanceIds=[node0])
    Sandbox(root=home / "aws-sandbox" / "machines").unbind([node0])
    if "fleet.run.node_supervisor" in _cmdline(pid):
        os.kill(pid, signal.SIGKILL)
    return env, exp, run_id, before


def test_a_run_lost_with_node0_is_resumed_by_the_reaper_as_attempt_2(  # noqa: F811
        sandbox, tmp_path, postgres_url):
    """`fleet reap` ends the run lost and, its settings allowing it (recovery = "always", a restart
    left, no budget), starts attempt 2 itself: new machines, supervised from their node 0, each
    rank from its own last checkpoint, to the final step. The laptop (its own pid namespace) sees the
    supervisor gone; the reap itself runs in this test's namespace, because the sandbox's new
    machines are processes of whoever leases them, and a namespace ends its processes with it."""
    env, exp, run_id, before = _train_run(sandbox, tmp_path, postgres_url, max_restarts=2)

    def gone() -> bool:
        status = json.loads(_laptop(["status", "--json"], exp, env).stdout or "{}")
        return any(r.get("supervisor_gone") for v in status.get("leases", []) for r in v["runs"] if r["id"] == run_id)
    assert wait_until(gone, 120), "fleet status never showed the supervisor gone"

    dry = run_fleet(["reap", "--dry-run", "--json"], cwd=exp, env=env, timeout=120)
    assert dry.returncode == 0, dry.stderr
    would = json.loads(dry.stdout)["lost_runs"]
    assert would == [{"run_id": run_id, "resumed": True, "attempt": 2, "next_run_id": f"{run_id}-a2"}], would
    assert _run_row(postgres_url, run_id)["status"] == "running"   # a dry run changes nothing

    reap = run_fleet(["reap"], cwd=exp, env=env, timeout=300)
    out = reap.stdout + reap.stderr
    assert reap.returncode == 0, out[-4000:]
    assert f"resumed run {run_id} as attempt 2 ({run_id}-a2) on lease " in reap.stdout, out[-4000:]
    row = _run_row(postgres_url, run_id)
    assert row["status"] == "lost" and row["meta"]["next_attempt"] == f"{run_id}-a2", row
    twice = run_fleet(["up", "--resume", run_id, "--gpus", "2"], cwd=exp, env=env, timeout=120)
    if _run_row(postgres_url, f"{run_id}-a2")["status"] == "running":    # no second attempt beside the reaper's
        assert twice.returncode == 2 and f"run {run_id} is already being resumed, as run {run_id}-a2" \
            in twice.stderr, twice.stderr

    assert_attach_follows_to_attempt_2(run_id, exp, env, ranks=2, steps=150)
    mine = {i["InstanceId"] for i in _instances(env) if i["InstanceId"] not in before}
    assert len(mine) == 4, mine   # two per attempt
    assert wait_until(lambda: all(i["State"]["Name"] in ("terminated", "shutting-down")
                                  for i in _instances(env) if i["InstanceId"] in mine), 120)


@pytest.mark.parametrize("max_restarts, recovery, why", [
    (0, "always", "max_restarts (0) is used up after 1 attempt"),
    (2, "never", 'recovery = "never"'),
], ids=["max-restarts-used-up", "recovery-never"])
def test_a_lost_run_its_settings_do_not_resume_stays_lost_and_says_why(  # noqa: F811
        sandbox, tmp_path, postgres_url, max_restarts, recovery, why):
    env, exp, run_id, before = _train_run(sandbox, tmp_path, postgres_url, max_restarts=max_restarts,
                                          recovery=recovery)

    said: list[str] = []

    def reaped() -> bool:   # `fleet reap` ends it once the supervisor has been silent for 6 beats
        said.append(_laptop(["reap"], exp, env).stdout)
        return _run_row(postgres_url, run_id)["status"] == "lost"
    assert wait_until(reaped, 120), _run_row(postgres_url, run_id)
    out = said[-1]
    assert f"run {run_id} stays lost, not resumed: {why}\n" in out, out
    row = _run_row(postgres_url, run_id)
    assert "not been heard from" in row["meta"]["summary"]["message"] and not row["meta"].get("next_attempt"), row
    mine = {i["InstanceId"] for i in _instances(env) if i["InstanceId"] not in before}
    assert len(mine) == 2, mine   # nothing launched
    again = json.loads(_laptop(["reap", "--json"], exp, env).stdout)
    assert again["lost_runs"] == [] and len({i["InstanceId"] for i in _instances(env)} - before) == 2, again


def test_a_lost_run_resumed_by_hand_detached_is_supervised_from_the_new_node0(  # noqa: F811
        sandbox, tmp_path, postgres_url):
    """`fleet up --resume RUN -d` hands the resumed run to node 0 of its new lease too (the path the
    reaper uses), each node from its own checkpoint."""
    env, exp, run_id, _before = _train_run(sandbox, tmp_path, postgres_url, max_restarts=0)

    def reaped() -> bool:
        _laptop(["reap"], exp, env)
        return _run_row(postgres_url, run_id)["status"] == "lost"
    assert wait_until(reaped, 120), _run_row(postgres_url, run_id)
    again = run_fleet(["up", "--resume", run_id, "-d", "--gpus", "2", "--json"], cwd=exp, env=env, timeout=240)
    assert again.returncode == 0, again.stderr[-4000:]
    handoff = json.loads(again.stdout)
    assert handoff["supervised_on"] == "node 0", handoff
    attach = run_fleet(["attach", handoff["run_id"], "--json"], cwd=exp, env=env, timeout=300)
    summary = json.loads(attach.stdout)
    assert attach.returncode == 0 and summary["status"] == "succeeded" and summary["attempt"] == 2, attach.stderr[-4000:]
    logs = run_fleet(["logs", handoff["run_id"]], cwd=exp, env=env).stdout
    for rank in (0, 1):
        line = f"rank {rank} attempt 2 resumed 1 from "
        assert line in logs and 0 < int(logs.split(line)[1].split()[0]) < 150, logs[-4000:]
        assert f"rank {rank} finished at 150" in logs, logs[-4000:]
