"""`fleet reap` on team hosts (the ssh provider: three loopback sshd hosts, a PostgreSQL state, a
moto S3 store): a detached 2-host training run supervised from node 0's host, which is then powered
off (its sshd, sessions and every process of it killed, the supervisor with them). The laptop, in a
pid namespace of its own, can only tell from the supervisor's silence in the state.

`fleet reap --dry-run` says what it would do and changes nothing; `fleet reap` releases the lease
(node 1's processes ended and its workdir removed, the GPU slots freed, the lease key's line taken
out of node 1's host login, every machine's ledger segment closed), ends the run `lost`, and, its
settings allowing it, resumes it as attempt 2 on the hosts still up, from each node's checkpoint,
supervised from the new node 0, which `fleet attach` follows to `succeeded`. With recovery = "never"
or max_restarts = 0 the run stays lost, `fleet reap` says why, nothing is leased, and the host that
did not answer is marked down. A supervisor that died on a node 0 host that stays up is reaped the
same way, the release reaching both hosts. With every host down, the lease is still released and
billed, and the reaper says why attempt 2 could not be started."""
from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import replace

import pytest

from tests.conftest import FLEET, wait_until
from tests.e2e.test_checkpoints import TRAIN
from tests.e2e.test_detach_node0_sandbox import _cmdline, _ledger, _run_row
from tests.e2e.test_detach_node0_ssh_hosts import STORE, _env, _lease_status, _slots, _unheld_slots
from tests.e2e.test_recovery_ssh_hosts import _power_off
from tests.fixtures.laptop import LAPTOP, skip_without_laptop
from tests.fixtures.procs import live_processes_under
from tests.fixtures.ssh_hosts import PYTHON, started_farm, toml_hosts
from tests.fixtures.attempts import assert_attach_follows_to_attempt_2

pytestmark = pytest.mark.timeout(420)

STEPS = 200   # 0.1 s each in attempt 1, far from done when node 0's host goes down; 0.02 s in attempt 2


@pytest.fixture
def farm(tmp_path):
    skip_without_laptop(": the laptop must not see the supervisor's pid")
    with started_farm(tmp_path / "farm", ("ha", "hb", "hc"), login_keys=True) as farm:
        yield farm


def _laptop(args: list[str], exp, env, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*LAPTOP, FLEET, *args], cwd=exp, env=env, capture_output=True, text=True, timeout=timeout)


def _checkpointed_ranks(env: dict, run_id: str) -> int:
    done = subprocess.run([PYTHON, "-c", "from fleet.snapshots import open_store; "
                           "from fleet.run.checkpoints import latest_snapshots; "
                           f"print(len(latest_snapshots(open_store({STORE!r}), {run_id!r}, [0, 1])))"],
                          env=env, capture_output=True, text=True, timeout=60)
    return int(done.stdout.strip() or 0)


def _leases(postgres_url: str) -> list[tuple[str, str]]:
    import psycopg
    with psycopg.connect(postgres_url) as db:
        return list(db.execute("SELECT id, status FROM leases ORDER BY created_at"))


def _train_and_power_off(farm, tmp_path, postgres_url, aws_env, *, recovery: str, max_restarts: int,
                         host_stays_up: bool = False) -> dict:
    """A detached 2-host training run checkpointing every second; once both nodes have a checkpoint
    in the store, node 0's host goes down with the supervisor (`host_stays_up`: only the supervisor
    dies there, SIGKILLed as the OOM killer would). Returns what the test needs."""
    env = {**_env(farm, tmp_path, postgres_url, aws_env), "FLEET_SUPERVISOR_BEAT_S": "0.5"}
    me = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    hosts = [replace(h, supervisor_login=me, supervisor_python=PYTHON) for h in farm.configs(gpus=1)]
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "train.py").write_text(TRAIN)
    (exp / "fleet.toml").write_text(
        f'project = "reap-hosts"\nprovider = "ssh"\ntemplate = "hosts-1gpu"\nmax_duration = "10m"\n'
        f'python = "{PYTHON}"\nstore = "{STORE}"\ncommand = "python train.py {STEPS} 0.1 0.02"\n'
        f'checkpoint_interval = "1s"\nrecovery = "{recovery}"\nmax_restarts = {max_restarts}\n\n' + toml_hosts(hosts))
    up = _laptop(["up", "-d", "--gpus", "2", "--json"], exp, env, timeout=240)
    assert up.returncode == 0, up.stdout + up.stderr
    handoff = json.loads(up.stdout)
    assert handoff["supervised_on"] == "node 0", handoff
    run_id, lease_id, pid = handoff["run_id"], handoff["lease_id"], handoff["supervisor_pid"]
    assert wait_until(lambda: _checkpointed_ranks(env, run_id) == 2, 120), "no checkpoint of both nodes"
    cwd = os.readlink(f"/proc/{pid}/cwd")
    [node0_host] = [h for h in farm.hosts if cwd.startswith(str(h.directory))]
    used = {m["zone"] for v in json.loads(_laptop(["status", "--json"], exp, env).stdout)["leases"]
            if v["id"] == lease_id for m in v["machines"]}
    [node1_host] = [h for h in farm.hosts if h.name in used and h is not node0_host]
    if host_stays_up:
        os.kill(pid, signal.SIGKILL)
    else:
        _power_off(node0_host)   # the supervisor's command line names its directory there: it goes too
    assert wait_until(lambda: not _cmdline(pid), 10), _cmdline(pid)
    return {"env": env, "exp": exp, "run_id": run_id, "lease_id": lease_id, "node0": node0_host,
            "node1": node1_host}


def _wait_supervisor_gone(run: dict) -> None:
    def gone() -> bool:
        status = json.loads(_laptop(["status", "--json"], run["exp"], run["env"]).stdout or "{}")
        return any(r.get("supervisor_gone") for v in status.get("leases", []) for r in v["runs"]
                   if r["id"] == run["run_id"])
    assert wait_until(gone, 60), "fleet status never showed the supervisor gone"


def _assert_released(run: dict, postgres_url: str) -> None:
    """The lease released from the laptop: node 1's processes ended and its workdir removed, the
    slots free, the lease key's line out of node 1's host login, every segment closed."""
    lease_id, node1 = run["lease_id"], run["node1"]
    assert _lease_status(postgres_url, lease_id) == "released"
    # Only a host that did not answer keeps its machine's slots, until that machine's watchdog deadline.
    assert {host for host, _slot in _slots(postgres_url, lease_id)} <= {run["node0"].name}, _slots(postgres_url, lease_id)
    assert not _unheld_slots(postgres_url, lease_id)
    assert f"fleet-lease-{lease_id}" not in node1.login_keys.read_text()
    assert not (node1.leases_dir / lease_id).exists(), list((node1.leases_dir / lease_id).rglob("*"))
    assert wait_until(lambda: not [p for p in live_processes_under(node1.directory) if lease_id in p[1]], 30)
    rows = _ledger(postgres_url, run["run_id"])
    machines = {f"{lease_id}-n0", f"{lease_id}-n1"}
    assert {r[0] for r in rows if r[1] == "open"} == machines == {r[0] for r in rows if r[1] == "close"}, rows
    assert {r[2] for r in rows if r[1] == "open"} == {r[2] for r in rows if r[1] == "close"}, rows


def test_a_run_whose_node0_host_went_down_is_released_and_resumed_by_the_reaper(
        farm, tmp_path, postgres_url, aws_env):
    run = _train_and_power_off(farm, tmp_path, postgres_url, aws_env, recovery="always", max_restarts=2)
    run_id, lease_id, exp, env = run["run_id"], run["lease_id"], run["exp"], run["env"]
    _wait_supervisor_gone(run)

    dry = _laptop(["reap", "--dry-run", "--json"], exp, env)
    assert dry.returncode == 0, dry.stderr
    said = json.loads(dry.stdout)
    assert said["region"] is None and said["actions"] == [] and said["left_alone"] == [], said
    assert said["released_leases"] == [lease_id], said
    assert said["lost_runs"] == [{"run_id": run_id, "resumed": True, "attempt": 2, "next_run_id": f"{run_id}-a2"}]
    # A dry run changes nothing: the run, the lease, its slots and its key line on node 1's host stay.
    assert _run_row(postgres_url, run_id)["status"] == "running"
    assert _lease_status(postgres_url, lease_id) == "active" and _slots(postgres_url, lease_id)
    assert f"fleet-lease-{lease_id}" in run["node1"].login_keys.read_text()
    assert len(_leases(postgres_url)) == 1

    reap = _laptop(["reap"], exp, env)
    out = reap.stdout + reap.stderr
    assert reap.returncode == 0 and "Traceback" not in out, out[-4000:]
    assert "no AWS stack configured here: no fleet instances judged" in reap.stdout, out[-4000:]
    assert f"released 1 lease(s) whose run's supervisor is silent: {lease_id}" in reap.stdout, out[-4000:]
    assert f"resumed run {run_id} as attempt 2 ({run_id}-a2) on lease " in reap.stdout, out[-4000:]
    row = _run_row(postgres_url, run_id)
    assert row["status"] == "lost" and row["meta"]["next_attempt"] == f"{run_id}-a2", row
    message = row["meta"]["summary"]["message"]
    assert "not been heard from" in message and "released by `fleet reap`" in message, message
    _assert_released(run, postgres_url)

    summary = assert_attach_follows_to_attempt_2(run_id, exp, env, ranks=2, steps=STEPS)
    # Attempt 2 was leased on the hosts still up, and released at its end (its slots and key too).
    [(first, first_status), (second, status)] = _leases(postgres_url)
    assert (first, first_status) == (lease_id, "released"), _leases(postgres_url)
    assert wait_until(lambda: _lease_status(postgres_url, second) == "released", 60), _leases(postgres_url)
    second_row = _run_row(postgres_url, f"{run_id}-a2")
    assert second_row["lease_id"] == second and second_row["meta"]["supervised_on"], second_row
    assert run["node0"].name not in {m["zone"] for m in summary["launched"]}, summary["launched"]
    assert wait_until(lambda: not _slots(postgres_url, second), 60)
    for host in farm.hosts:
        if host is not run["node0"]:
            assert f"fleet-lease-{second}" not in host.login_keys.read_text(), host.name


@pytest.mark.parametrize("max_restarts, recovery, why", [
    (0, "always", "max_restarts (0) is used up after 1 attempt"),
    (2, "never", 'recovery = "never"'),
], ids=["max-restarts-used-up", "recovery-never"])
def test_a_team_host_run_its_settings_do_not_resume_stays_lost_and_says_why(
        farm, tmp_path, postgres_url, aws_env, max_restarts, recovery, why):
    run = _train_and_power_off(farm, tmp_path, postgres_url, aws_env, recovery=recovery, max_restarts=max_restarts)
    run_id, exp, env = run["run_id"], run["exp"], run["env"]
    _wait_supervisor_gone(run)
    dry = json.loads(_laptop(["reap", "--dry-run", "--json"], exp, env).stdout)
    assert dry["lost_runs"] == [{"run_id": run_id, "resumed": False, "reason": why}], dry
    reap = _laptop(["reap"], exp, env)
    assert reap.returncode == 0, reap.stdout + reap.stderr
    assert f"run {run_id} stays lost, not resumed: {why}\n" in reap.stdout, reap.stdout + reap.stderr
    row = _run_row(postgres_url, run_id)
    assert row["status"] == "lost" and not row["meta"].get("next_attempt"), row
    _assert_released(run, postgres_url)
    assert [status for _id, status in _leases(postgres_url)] == ["released"]   # nothing leased for attempt 2
    # The host that did not answer the release is marked down (no lease lands there until it answers).
    hosts = json.loads(_laptop(["hosts", "ls", "--no-probe", "--json"], exp, env).stdout)["hosts"]
    assert {h["name"]: h["status"] for h in hosts}[run["node0"].name] == "down", hosts
    again = json.loads(_laptop(["reap", "--json"], exp, env).stdout)
    assert again["lost_runs"] == [] and again["released_leases"] == [], again


def test_a_supervisor_that_died_on_a_live_node0_host_is_reaped_and_the_key_revoked_on_both_hosts(
        farm, tmp_path, postgres_url, aws_env):
    """Node 0's host stays up, only its supervisor died: the release reaches both hosts (both
    machines' processes ended, the lease key's line out of both logins), the run stays lost with
    recovery = "never", and `fleet reap --json` says so."""
    run = _train_and_power_off(farm, tmp_path, postgres_url, aws_env, recovery="never", max_restarts=2,
                               host_stays_up=True)
    run_id, lease_id, exp, env = run["run_id"], run["lease_id"], run["exp"], run["env"]
    _wait_supervisor_gone(run)
    reap = _laptop(["reap", "--json"], exp, env)
    assert reap.returncode == 0, reap.stderr
    said = json.loads(reap.stdout)
    assert said["released_leases"] == [lease_id] and said["region"] is None, said
    assert said["lost_runs"] == [{"run_id": run_id, "resumed": False, "reason": 'recovery = "never"'}], said
    _assert_released(run, postgres_url)
    assert not _slots(postgres_url, lease_id)        # both hosts answered: every slot is free at once
    node0 = run["node0"]
    assert f"fleet-lease-{lease_id}" not in node0.login_keys.read_text()
    assert not (node0.leases_dir / lease_id).exists()
    assert wait_until(lambda: not [p for p in live_processes_under(node0.directory) if lease_id in p[1]], 30)
    hosts = json.loads(_laptop(["hosts", "ls", "--no-probe", "--json"], exp, env).stdout)["hosts"]
    assert {h["status"] for h in hosts} == {"up"}, hosts   # every host answered: none marked down


def test_with_no_host_left_the_reaper_releases_the_lease_and_says_why_it_cannot_resume(
        farm, tmp_path, postgres_url, aws_env):
    """Every host goes down: the release reaches none of them (each marked down, the slots held,
    both segments closed from this computer), and attempt 2, allowed by the run's settings, cannot
    be leased: one line says so, nothing stays leased, and no mark is left on the lost run. (The slots
    stay taken until the machines' watchdog deadline: the hosts may only be cut off.)"""
    run = _train_and_power_off(farm, tmp_path, postgres_url, aws_env, recovery="always", max_restarts=2)
    run_id, lease_id, exp, env = run["run_id"], run["lease_id"], run["exp"], run["env"]
    for host in farm.hosts:
        if host is not run["node0"]:
            _power_off(host)
    _wait_supervisor_gone(run)
    reap = _laptop(["reap"], exp, env)
    out = reap.stdout + reap.stderr
    assert reap.returncode == 0 and "Traceback" not in out, out[-4000:]
    assert f"run {run_id} stays lost, not resumed: attempt 2 could not be started: " in reap.stdout, out[-4000:]
    row = _run_row(postgres_url, run_id)
    assert row["status"] == "lost" and not row["meta"].get("next_attempt") and not row["meta"].get("resuming"), row
    assert _lease_status(postgres_url, lease_id) == "released" and not _unheld_slots(postgres_url, lease_id)
    rows = _ledger(postgres_url, run_id)
    machines = {f"{lease_id}-n0", f"{lease_id}-n1"}
    assert {r[0] for r in rows if r[1] == "open"} == machines == {r[0] for r in rows if r[1] == "close"}, rows
    assert [s for _id, s in _leases(postgres_url) if s in ("active", "leasing")] == [], _leases(postgres_url)
    hosts = json.loads(_laptop(["hosts", "ls", "--no-probe", "--json"], exp, env).stdout)["hosts"]
    assert {h["name"]: h["status"] for h in hosts}[run["node1"].name] == "down", hosts


@pytest.mark.parametrize("who", ["teammate-rewrote-the-lease", "another-computer"])
def test_the_reaper_resumes_only_runs_its_own_user_launched_from_settings_it_sealed(
        farm, tmp_path, postgres_url, aws_env, who):
    """A teammate who can write the shared state rewrites the lost run's launch settings (here: its
    next attempt on one GPU of whichever host; a planted login node or store works the same way),
    or `fleet reap` runs on another computer that does not hold the launching computer's seal key:
    the run is ended lost and released as always, but not resumed (nothing is leased, nothing
    handed to any host), and the reaper says why and how its owner resumes it by hand."""
    import psycopg
    run = _train_and_power_off(farm, tmp_path, postgres_url, aws_env, recovery="always", max_restarts=2)
    run_id, lease_id, exp, env = run["run_id"], run["lease_id"], run["exp"], run["env"]
    if who == "another-computer":
        env = {**env, "FLEET_HOME": str(tmp_path / "another-computer-home")}
    else:
        with psycopg.connect(postgres_url) as db:
            [(text,)] = db.execute("SELECT meta FROM leases WHERE id = %s", (lease_id,))
            meta = json.loads(text)
            meta["relaunch"]["overrides"]["gpus"] = 1
            db.execute("UPDATE leases SET meta = %s WHERE id = %s", (json.dumps(meta), lease_id))
    why = "its launch settings are not sealed by this computer's key"
    _wait_supervisor_gone(run)
    reap = _laptop(["reap", "--json"], exp, env)
    assert reap.returncode == 0, reap.stdout + reap.stderr
    said = json.loads(reap.stdout)
    assert said["released_leases"] == [lease_id], said
    [lost] = said["lost_runs"]
    assert lost["run_id"] == run_id and lost["resumed"] is False, lost
    assert lost["reason"].startswith(why) and lost["reason"].endswith(f"`fleet up --resume {run_id} -d` resumes it"), lost
    row = _run_row(postgres_url, run_id)
    assert row["status"] == "lost" and not row["meta"].get("next_attempt") and not row["meta"].get("resuming"), row
    _assert_released(run, postgres_url)
    assert [status for _id, status in _leases(postgres_url)] == ["released"]   # nothing leased for attempt 2
