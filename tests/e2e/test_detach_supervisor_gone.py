"""A detached run whose supervisor is SIGKILLed while people follow it (local provider): `fleet logs -f`
and `fleet attach` return with a last line saying the run is no longer supervised instead of
following it for ever — on this computer (the pid is provably gone) and on "another computer": a
second FLEET_HOME sharing the PostgreSQL state, its commands run in a pid namespace of their own
(`unshare`), where /proc proves nothing about the supervisor and only its beat in the state, gone
silent, tells; `fleet status` there shows it; the next `fleet` command on the supervisor's computer releases the machines, closes the
ledger and records the run as lost."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import FLEET, processes_under, run_fleet, wait_until

ELSEWHERE = ("unshare", "--pid", "--fork", "--mount-proc")   # another pid namespace: /proc proves nothing

LONG = ("sh", "-c", "echo started; sleep 300")


def _detach(cwd: Path, env: dict) -> tuple[str, str]:
    proc = subprocess.Popen([FLEET, "up", "-d", "--gpus", "2", "--json", "--", *LONG], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env}, start_new_session=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return json.loads(out)["run_id"], json.loads(out)["lease_id"]


def _follow(args: list[str], cwd: Path, env: dict, err_path: Path, prefix: tuple = ()) -> subprocess.Popen:
    with open(err_path, "w") as err:
        return subprocess.Popen([*prefix, FLEET, *args], cwd=cwd, env={**os.environ, **env}, stdout=subprocess.PIPE,
                                stderr=err, text=True)


def _finish(proc: subprocess.Popen, timeout: float) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
        return out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _kill_supervisor(home: Path, run_id: str) -> None:
    ident = json.loads((home / "supervisors" / run_id / "identity.json").read_text())
    os.kill(ident["pid"], signal.SIGKILL)   # no finally-block: its run row stays `running`
    assert wait_until(lambda: not any("fleet.run.supervisor" in p for p in processes_under(home)), 30)


def _reconciled(cwd: Path, home: Path, run_id: str, lease_id: str, env: dict | None = None) -> None:
    status = run_fleet(["status", "--json"], cwd=cwd, env=env)   # any command on its computer reconciles
    assert status.returncode == 0, status.stderr
    assert f"run {run_id} lost" in status.stderr, status.stderr
    assert json.loads(status.stdout)["leases"] == []
    runs = json.loads(run_fleet(["runs", "ls", "--json"], cwd=cwd, env=env).stdout)["runs"]
    assert next(r for r in runs if r["run_id"] == run_id)["status"] == "lost"
    if (home / "state.db").exists() and not (env or {}).get("FLEET_STATE_URL"):
        with sqlite3.connect(home / "state.db") as db:
            closed = {m for m, in db.execute("SELECT machine_id FROM ledger WHERE run_id = ? AND kind = 'close'",
                                             (run_id,))}
        assert closed == {f"{lease_id}-n0", f"{lease_id}-n1"}, closed
    assert wait_until(lambda: processes_under(home) == [], 30), processes_under(home)


def test_logs_follow_and_attach_return_when_the_supervisor_is_killed(experiment, fleet_home, tmp_path):
    run_id, lease_id = _detach(experiment, {})
    logs = _follow(["logs", run_id, "-f"], experiment, {}, tmp_path / "logs.err")
    attach = _follow(["attach", run_id], experiment, {}, tmp_path / "attach.err")
    try:
        assert "started" in logs.stdout.readline()
        assert "started" in attach.stdout.readline()
        _kill_supervisor(fleet_home, run_id)
        out = _finish(logs, 60)
        attach_out = _finish(attach, 60)
    finally:
        for p in (logs, attach):
            if p.poll() is None:
                p.kill()
    assert logs.returncode == 0, (tmp_path / "logs.err").read_text()
    last = out.strip().splitlines()[-1]
    assert f"run {run_id} is no longer supervised" in last and "is gone" in last, out
    assert f"fleet down {lease_id}" in last, last
    attach_err = (tmp_path / "attach.err").read_text()
    assert attach.returncode == 10 and "Traceback" not in attach_err, attach_err
    assert f"run {run_id} no longer supervised" in attach_err and "is gone" in attach_err, attach_err
    assert "no longer supervised" in attach_out.strip().splitlines()[-1]
    _reconciled(experiment, fleet_home, run_id, lease_id)


def _elsewhere(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([*ELSEWHERE, FLEET, *args], cwd=cwd, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=120)


def test_a_second_home_sharing_postgres_sees_the_silent_supervisor(experiment, fleet_home, tmp_path, postgres_url):
    if subprocess.run([*ELSEWHERE, "true"], capture_output=True).returncode != 0:
        pytest.skip("needs `unshare --pid` (root or user namespaces) to stand for another computer")
    shared = {"FLEET_STATE_URL": postgres_url}
    run_id, lease_id = _detach(experiment, {**shared, "FLEET_SUPERVISOR_BEAT_S": "0.5"})
    other = {**shared, "FLEET_HOME": str(tmp_path / "second-home")}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    logs = _follow(["logs", run_id, "-f"], elsewhere, other, tmp_path / "logs.err", ELSEWHERE)
    try:
        assert "started" in logs.stdout.readline()
        killed = time.monotonic()
        _kill_supervisor(fleet_home, run_id)
        out = _finish(logs, 90)
    finally:
        if logs.poll() is None:
            logs.kill()
    assert logs.returncode == 0, (tmp_path / "logs.err").read_text()
    assert time.monotonic() - killed < 90
    last = out.strip().splitlines()[-1]
    assert f"run {run_id} is no longer supervised" in last and "not been heard from" in last, out
    status = _elsewhere(["status", "--json"], elsewhere, other)
    assert status.returncode == 0, status.stderr
    [lease] = [v for v in json.loads(status.stdout)["leases"] if v["id"] == lease_id]
    [run] = [r for r in lease["runs"] if r["id"] == run_id]
    assert run["status"] == "running" and "not been heard from" in run["supervisor_gone"], run
    table = _elsewhere(["status"], elsewhere, other)
    assert "supervisor gone" in table.stdout, table.stdout
    _reconciled(experiment, fleet_home, run_id, lease_id, env=shared)


def test_a_command_run_in_another_directory_reconciles_the_run_in_its_projects_own_state(
        experiment, fleet_home, tmp_path):
    """The project names its state (`state_url`); the supervisor dies; the next `fleet` command is
    typed in another directory, whose state is this computer's default. It must still find the run
    where it lives, release its machines and record it lost, not forget the supervisor."""
    team_db = tmp_path / "team.db"
    config = experiment / "fleet.toml"
    config.write_text(f'state_url = "sqlite:///{team_db}"\n' + config.read_text())
    run_id, lease_id = _detach(experiment, {})
    _kill_supervisor(fleet_home, run_id)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    status = run_fleet(["status", "--json"], cwd=elsewhere)
    assert status.returncode == 0, status.stderr
    assert f"run {run_id} lost" in status.stderr, status.stderr
    runs = json.loads(run_fleet(["runs", "ls", "--json"], cwd=experiment).stdout)["runs"]
    assert next(r for r in runs if r["run_id"] == run_id)["status"] == "lost"
    assert json.loads(run_fleet(["status", "--json"], cwd=experiment).stdout)["leases"] == []
    assert wait_until(lambda: processes_under(fleet_home) == [], 30), processes_under(fleet_home)


def test_a_stopped_supervisor_is_seen_by_followers_and_fleet_down_ends_its_run(experiment, fleet_home, tmp_path):
    """Red-team finding: a SIGSTOPped supervisor (its pid alive) was followed by `fleet attach` for
    ever, `fleet down` waited its full 120 s for it and left the run `running`. A stopped process whose
    beat went silent is gone to followers; `fleet down` continues it with its SIGTERM, so it records
    its run itself."""
    env = {"FLEET_SUPERVISOR_BEAT_S": "0.5"}
    run_id, lease_id = _detach(experiment, env)
    ident = json.loads((fleet_home / "supervisors" / run_id / "identity.json").read_text())
    attach = _follow(["attach", run_id], experiment, env, tmp_path / "attach.err")
    try:
        assert "started" in attach.stdout.readline()
        os.kill(ident["pid"], signal.SIGSTOP)
        _finish(attach, 60)
    finally:
        if attach.poll() is None:
            attach.kill()
    attach_err = (tmp_path / "attach.err").read_text()
    assert attach.returncode == 10 and "stopped (SIGSTOP)" in attach_err, attach_err
    started = time.monotonic()
    down = run_fleet(["down", lease_id], cwd=experiment, env=env)
    assert down.returncode == 0 and time.monotonic() - started < 60, down.stderr
    runs = json.loads(run_fleet(["runs", "ls", "--json"], cwd=experiment, env=env).stdout)["runs"]
    assert next(r for r in runs if r["run_id"] == run_id)["status"] != "running"
    assert wait_until(lambda: processes_under(fleet_home) == [], 30), processes_under(fleet_home)
