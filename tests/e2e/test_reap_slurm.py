"""`fleet reap` on Slurm leases (ReleasedFromAnywhere through the lease's recorded login node): a
detached, checkpointing run supervised from the login node (a loopback sshd in front of the real
test cluster, PostgreSQL state, moto S3 store) loses its supervisor (SIGKILLed there, as an OOM
killer or a login node's process reaper would). From the laptop (its own pid namespace, torn down
after each command) `fleet reap --dry-run --json` says what it would do and changes nothing; `fleet
reap` scancels the job over the login SSH (nothing of the lease left in squeue), closes its ledger,
ends the run `lost` and starts attempt 2's supervisor on the login node, which resumes from the
checkpoint and which `fleet attach` follows to `succeeded`. With recovery = "never" the run stays
lost with the reason and nothing is queued. With fleet on the login node itself (no login
recorded), `fleet reap` from another FLEET_HOME sharing the state leaves the lease alone, saying
why, without Slurm's tools on PATH, and with them scancels it and ends the run lost, not resumed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import FLEET, run_fleet, wait_until
from tests.e2e.test_detach_node0_sandbox import _cmdline, _ledger, _run_row
from tests.e2e import test_detach_slurm_login as slurm_login
from tests.e2e.test_detach_slurm_login import STORE, _fleet_jobs, _laptop_env, _supervisors, _write_exp
from tests.fixtures.attempts import assert_attach_follows_to_attempt_2
from tests.fixtures.laptop import LAPTOP
from tests.fixtures.procs import live_processes_under
from tests.fixtures.slurm_exp import write_exp_on_the_login_node

login = slurm_login.login   # the fixture: a loopback sshd login node in front of the test cluster

pytestmark = pytest.mark.timeout(420)
STEPS = 40


def _laptop(args: list[str], exp, env, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*LAPTOP, FLEET, *args], cwd=exp, env=env, capture_output=True, text=True, timeout=timeout)


def _lease_status(postgres_url: str, lease_id: str) -> str | None:
    import psycopg
    with psycopg.connect(postgres_url) as db:
        row = db.execute("SELECT status FROM leases WHERE id = %s", (lease_id,)).fetchone()
    return row[0] if row else None


def _lease_count(postgres_url: str) -> int:
    import psycopg
    with psycopg.connect(postgres_url) as db:
        return db.execute("SELECT count(*) FROM leases").fetchone()[0]


def _checkpointed(env: dict, run_id: str) -> bool:
    done = subprocess.run([sys.executable, "-c", "from fleet.snapshots import open_store; "
                           "from fleet.run.checkpoints import latest_snapshots; "
                           f"print(len(latest_snapshots(open_store({STORE!r}), {run_id!r}, [0])))"],
                          env=env, capture_output=True, text=True, timeout=60)
    return done.stdout.strip() == "1"


def _train_and_kill_supervisor(login, tmp_path, postgres_url, *, recovery: str) -> dict:
    from tests.e2e.test_checkpoints import TRAIN_HELD_IN_ATTEMPT_1
    farm, host = login
    exp = _write_exp(tmp_path, farm, host, f"python3 train.py {STEPS} 0.1")
    (exp / "train.py").write_text(TRAIN_HELD_IN_ATTEMPT_1)   # attempt 1 is still running when it is reaped
    toml = (exp / "fleet.toml").read_text().replace(
        'command = ', f'checkpoint_interval = "1s"\nrecovery = "{recovery}"\nmax_restarts = 2\ncommand = ')
    (exp / "fleet.toml").write_text(toml)
    env = {**_laptop_env(farm, tmp_path, postgres_url), "FLEET_SUPERVISOR_BEAT_S": "0.5"}
    up = _laptop(["up", "-d", "--gpus", "1", "--json"], exp, env)
    assert up.returncode == 0, up.stdout + up.stderr
    handoff = json.loads(up.stdout)
    assert handoff["supervised_on"] == "login node", handoff
    run_id, lease_id, pid = handoff["run_id"], handoff["lease_id"], handoff["supervisor_pid"]
    assert wait_until(lambda: _checkpointed(env, run_id), 120), "no checkpoint in the store"
    time.sleep(2)   # a few more periodic checkpoint uploads (every 1 s)
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not _cmdline(pid), 10), _cmdline(pid)

    seen: list[str] = []

    def gone() -> bool:
        done = _laptop(["status", "--json"], exp, env)
        seen[:] = [done.stdout[-3000:] + done.stderr[-2000:]]
        status = json.loads(done.stdout or "{}")
        return any(r.get("supervisor_gone") for v in status.get("leases", []) for r in v["runs"] if r["id"] == run_id)
    assert wait_until(gone, 60), f"fleet status never showed the supervisor gone: {seen} {_run_row(postgres_url, run_id)}"
    return {"exp": exp, "env": env, "run_id": run_id, "lease_id": lease_id, "pid": pid}


def _sruns_of(job_id: str) -> list[str]:
    return [c for c in (_cmdline(int(n)) for n in os.listdir("/proc") if n.isdigit())
            if c.startswith("srun ") and f"--jobid={job_id}" in c]


def _machine_processes(tmp_path, lease_id: str) -> list[str]:
    """What still runs of the lease's machines on the Slurm nodes (each process's agent names its
    machine directory): nothing once the job is cancelled, however loaded the node."""
    return [cmd for _pid, cmd in live_processes_under(tmp_path / "nodes") if f"/fleet-{lease_id}-n" in cmd]


def _jobs_of(slurm_env, lease_id: str) -> list:
    return [j for j in _fleet_jobs(slurm_env) if j.comment == f"fleet:lease={lease_id}"]


def test_a_login_node_supervisor_killed_mid_run_is_reaped_from_the_laptop_and_resumed_on_the_login_node(
        login, tmp_path, postgres_url, aws_env, slurm_env):
    run = _train_and_kill_supervisor(login, tmp_path, postgres_url, recovery="always")
    run_id, lease_id, exp, env = run["run_id"], run["lease_id"], run["exp"], run["env"]
    [job] = _jobs_of(slurm_env, lease_id)   # it outlives its supervisor until it is reaped
    assert _sruns_of(job.job_id), "the killed supervisor's srun frontend should still be running"

    dry = _laptop(["reap", "--dry-run", "--json"], exp, env)
    assert dry.returncode == 0, dry.stderr
    said = json.loads(dry.stdout)
    assert said["region"] is None and said["actions"] == [] and said["left_alone"] == [], said
    assert said["released_leases"] == [lease_id], said
    assert said["lost_runs"] == [{"run_id": run_id, "resumed": True, "attempt": 2, "next_run_id": f"{run_id}-a2",
                                  "supervised_on": "login node"}], said
    # A dry run changes nothing: the run, the lease and its job stay; nothing new is leased.
    assert _run_row(postgres_url, run_id)["status"] == "running"
    assert _lease_status(postgres_url, lease_id) == "active" and _jobs_of(slurm_env, lease_id)
    assert _lease_count(postgres_url) == 1 and _supervisors(login[1]) == []

    reap = _laptop(["reap"], exp, env)
    out = reap.stdout + reap.stderr
    assert reap.returncode == 0 and "Traceback" not in out, out[-4000:]
    assert f"released 1 lease(s) whose run's supervisor is silent: {lease_id}" in reap.stdout, out[-4000:]
    assert "supervised from the cluster's login node" in reap.stdout, out[-4000:]
    # scancelled over the login SSH (Slurm may show it COMPLETING for a moment while it ends its processes)
    assert wait_until(lambda: not _jobs_of(slurm_env, lease_id), 30), _jobs_of(slurm_env, lease_id)
    # The killed supervisor's orphaned srun frontend ends with its job, and so does the training.
    assert wait_until(lambda: not _sruns_of(job.job_id), 30), _sruns_of(job.job_id)
    assert wait_until(lambda: not _machine_processes(tmp_path, lease_id), 30), _machine_processes(tmp_path, lease_id)
    assert _lease_status(postgres_url, lease_id) == "released"
    row = _run_row(postgres_url, run_id)
    assert row["status"] == "lost" and row["meta"]["next_attempt"] == f"{run_id}-a2", row
    message = row["meta"]["summary"]["message"]
    assert "not been heard from" in message and "released by `fleet reap`" in message, message
    rows = _ledger(postgres_url, run_id)
    assert {r[0] for r in rows if r[1] == "open"} == {f"{lease_id}-n0"} == {r[0] for r in rows if r[1] == "close"}
    # Attempt 2's supervisor runs on the login node (the laptop's namespace is gone).
    assert wait_until(lambda: len(_supervisors(login[1])) == 1, 30), _supervisors(login[1])

    assert_attach_follows_to_attempt_2(run_id, exp, env, ranks=1, steps=STEPS)
    second = _run_row(postgres_url, f"{run_id}-a2")
    assert second["meta"]["supervised_on"] == "login node" and second["lease_id"] != lease_id, second
    assert f"resumed run {run_id} as attempt 2 ({run_id}-a2) on lease {second['lease_id']} " in reap.stdout, out
    assert wait_until(lambda: _lease_status(postgres_url, second["lease_id"]) == "released", 60)
    assert wait_until(lambda: not _fleet_jobs(slurm_env), 60), _fleet_jobs(slurm_env)
    assert wait_until(lambda: not _supervisors(login[1]), 60), _supervisors(login[1])


def test_a_slurm_run_with_recovery_never_stays_lost_and_nothing_is_queued(
        login, tmp_path, postgres_url, aws_env, slurm_env):
    run = _train_and_kill_supervisor(login, tmp_path, postgres_url, recovery="never")
    run_id, lease_id, exp, env = run["run_id"], run["lease_id"], run["exp"], run["env"]
    dry = json.loads(_laptop(["reap", "--dry-run", "--json"], exp, env).stdout)
    assert dry["lost_runs"] == [{"run_id": run_id, "resumed": False, "reason": 'recovery = "never"'}], dry
    reap = _laptop(["reap"], exp, env)
    assert reap.returncode == 0, reap.stdout + reap.stderr
    assert f'run {run_id} stays lost, not resumed: recovery = "never"' in reap.stdout, reap.stdout
    row = _run_row(postgres_url, run_id)
    assert row["status"] == "lost" and "next_attempt" not in row["meta"] and "resuming" not in row["meta"], row
    assert _lease_status(postgres_url, lease_id) == "released" and _lease_count(postgres_url) == 1
    # scancelled: Slurm may still show it COMPLETING while it ends the job's processes
    assert wait_until(lambda: not _fleet_jobs(slurm_env), 30), _fleet_jobs(slurm_env)
    assert _supervisors(login[1]) == []
    assert wait_until(lambda: not _machine_processes(tmp_path, lease_id), 30), _machine_processes(tmp_path, lease_id)


def test_with_fleet_on_the_login_node_itself_reap_releases_where_slurms_tools_run_and_says_why_not_elsewhere(
        tmp_path, slurm_env, fleet_home):
    """[slurm] login unset: the lease records no login node. Without Slurm's tools on PATH `fleet
    reap` leaves it alone with one line; with them (as on that login node) it scancels the job and
    ends the run lost, not resumed (its supervisor was a background process, not a login-node one)."""
    exp = write_exp_on_the_login_node(tmp_path, "slurm-on-login-reap", "sleep 300", 'recovery = "always"\n')
    env = {"FLEET_SUPERVISOR_BEAT_S": "0.5"}
    up = run_fleet(["up", "-d", "--gpus", "1", "--json"], cwd=exp, env=env, timeout=200)
    assert up.returncode == 0, up.stdout + up.stderr
    handoff = json.loads(up.stdout)
    run_id, lease_id, pid = handoff["run_id"], handoff["lease_id"], handoff["supervisor_pid"]
    assert handoff["supervised_on"] == "this computer", handoff
    assert wait_until(lambda: _jobs_of(slurm_env, lease_id), 60)
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not _cmdline(pid), 10), _cmdline(pid)
    # Another shell sharing the state (its own FLEET_HOME: the first one's next command would end
    # the dead background supervisor's run itself, fleet/run/detach.py reconcile).
    env = {**env, "FLEET_HOME": str(tmp_path / "other-home"), "FLEET_STATE_URL": f"sqlite:///{fleet_home}/state.db"}
    bare = {**env, "PATH": os.path.dirname(FLEET)}   # no squeue/scancel/sacct here
    away = run_fleet(["reap", "--json"], cwd=exp, env=bare)
    assert away.returncode == 0, away.stdout + away.stderr
    said = json.loads(away.stdout)
    assert said["released_leases"] == [] and said["lost_runs"] == [], said
    [line] = said["left_alone"]
    assert line.startswith(f"lease {lease_id} (run {run_id}: its supervisor (pid {pid} ") and line.endswith(
        "left alone: it was made on the cluster's login node itself (no [slurm] login recorded) and Slurm's "
        "tools (squeue, scancel, sacct) are not on this computer: run `fleet reap` on that login node"), line
    assert _jobs_of(slurm_env, lease_id)

    reap = run_fleet(["reap", "--json"], cwd=exp, env=env)
    assert reap.returncode == 0, reap.stdout + reap.stderr
    said = json.loads(reap.stdout)
    assert said["released_leases"] == [lease_id] and said["left_alone"] == [], said
    [lost] = said["lost_runs"]
    assert lost["run_id"] == run_id and lost["resumed"] is False, lost
    assert "neither on node 0 of its lease nor on its cluster's login node" in lost["reason"], lost
    assert wait_until(lambda: not _jobs_of(slurm_env, lease_id), 30), _jobs_of(slurm_env, lease_id)   # scancelled
    from fleet.state import open_state
    row = open_state().get_run(run_id)
    assert row["status"] == "lost" and "released by `fleet reap`" in row["meta"]["summary"]["message"], row


def test_two_reaps_at_once_start_one_attempt_2_on_the_login_node(login, tmp_path, postgres_url, aws_env, slurm_env):
    run = _train_and_kill_supervisor(login, tmp_path, postgres_url, recovery="always")
    run_id, exp, env = run["run_id"], run["exp"], run["env"]
    reaps = [subprocess.Popen([*LAPTOP, FLEET, "reap", "--json"], cwd=exp, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in reaps]
    assert all(p.returncode == 0 for p in reaps), outs
    lost = [r for out, _ in outs for r in json.loads(out)["lost_runs"]]
    resumed = [r for r in lost if r["resumed"]]
    assert len(resumed) == 1, (lost, [err[-1500:] for _, err in outs])   # the compare-and-set mark: one of them
    [resumed] = resumed
    assert resumed["lease_id"] not in (None, run["lease_id"]), lost   # attempt 2's own lease
    assert _lease_count(postgres_url) == 2, lost                # the lost attempt's and one new one
    assert len(_supervisors(login[1])) == 1, _supervisors(login[1])
    attach = run_fleet(["attach", run_id, "--json"], cwd=exp, env=env, timeout=300)
    assert attach.returncode == 0 and json.loads(attach.stdout)["status"] == "succeeded", attach.stderr[-4000:]
    assert wait_until(lambda: not _fleet_jobs(slurm_env), 60), _fleet_jobs(slurm_env)
