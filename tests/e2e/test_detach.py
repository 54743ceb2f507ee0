"""`fleet up --detach` on the local provider, judged through the CLI as a user sees it: the launcher
returns once inputs are staged, the run lives on without it (even SIGKILLed), outputs, ledger and
record arrive; `fleet attach`, `fleet logs -f`, `fleet down` work; a supervisor that dies is
reconciled by the next `fleet` command."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from tests.conftest import FLEET, processes_under, run_fleet, wait_until

SLOW = ("sh", "-c", "echo started; sleep 4; mkdir -p $FLEET_OUTPUT_DIR; "
        "echo result-$FLEET_NODE_RANK > $FLEET_OUTPUT_DIR/result.txt; echo finished")


def _launch(cwd: Path, args: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([FLEET, "up", "-d", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **(env or {})}, start_new_session=True)


def _run_row(cwd: Path, run_id: str, env: dict | None = None) -> dict:
    proc = run_fleet(["status", "--json"], cwd=cwd, env=env)
    assert proc.returncode == 0, proc.stderr
    for lease in json.loads(proc.stdout)["leases"]:
        for run in lease["runs"]:
            if run["id"] == run_id:
                return run
    return {}


def _record(cwd: Path, run_id: str) -> dict | None:
    proc = run_fleet(["runs", "ls", "--json"], cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return next((r for r in json.loads(proc.stdout)["runs"] if r["run_id"] == run_id), None)


def _ledger(home: Path, run_id: str) -> list[tuple[str, str]]:
    with sqlite3.connect(home / "state.db") as db:
        return list(db.execute("SELECT machine_id, kind FROM ledger WHERE run_id = ? ORDER BY id", (run_id,)))


def _supervisor_gone(home: Path) -> bool:
    return not any("fleet.run.supervisor" in line for line in processes_under(home))


def test_detached_run_completes_after_its_launcher_exits(experiment, fleet_home):
    proc = _launch(experiment, ["--gpus", "2", "--json", "--", *SLOW])
    out, err = proc.communicate(timeout=120)
    returned = time.monotonic()
    assert proc.returncode == 0, err
    handoff = json.loads(out)
    run_id, lease_id = handoff["run_id"], handoff["lease_id"]
    assert handoff["detached"] and handoff["status"] == "running" and lease_id, handoff
    assert "stage:" in err and "run:" in err, err   # it showed the run up to the handoff
    # The launcher is gone; the run is not.
    assert _run_row(experiment, run_id)["status"] == "running"
    attach = run_fleet(["attach", run_id], cwd=experiment, timeout=120)
    assert time.monotonic() - returned > 2   # the command sleeps 4 s: the launcher did not wait for it
    assert attach.returncode == 0, attach.stderr
    assert "[0] started" in attach.stdout and "[1] finished" in attach.stdout, attach.stdout
    assert f"run {run_id} succeeded" in attach.stderr, attach.stderr
    for rank in (0, 1):
        got = experiment / "runs" / run_id / f"node-{rank}" / "result.txt"
        assert got.read_text().strip() == f"result-{rank}"
    assert json.loads((experiment / "runs" / run_id / "summary.json").read_text())["status"] == "succeeded"
    rec = _record(experiment, run_id)
    assert rec and rec["status"] == "succeeded" and rec["lease_id"] == lease_id, rec
    rows = _ledger(fleet_home, run_id)
    assert sorted(k for _m, k in rows if k == "close") == ["close", "close"], rows   # both machines billed, closed
    assert wait_until(lambda: _supervisor_gone(fleet_home), 30)
    assert run_fleet(["status", "--json"], cwd=experiment).stdout.count('"id"') == 0


def test_launcher_sigkilled_while_staging_the_run_still_completes(experiment, fleet_home):
    proc = _launch(experiment, ["--gpus", "1", "--", *SLOW])
    try:
        deadline = time.monotonic() + 120
        seen = ""
        while "ready:" not in seen and time.monotonic() < deadline:
            seen += proc.stderr.readline()
        assert "ready:" in seen, seen
        proc.kill()    # no handoff, no finally-block: the supervisor does not depend on the launcher
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    [run_id] = [p.name for p in (fleet_home / "supervisors").iterdir()]
    assert wait_until(lambda: (_record(experiment, run_id) or {}).get("status") == "succeeded", 120)
    assert (experiment / "runs" / run_id / "node-0" / "result.txt").read_text().strip() == "result-0"
    assert [k for _m, k in _ledger(fleet_home, run_id)][-1] == "close"
    assert wait_until(lambda: _supervisor_gone(fleet_home), 30)


def test_down_asks_the_supervisor_to_stop_and_outputs_still_come_home(experiment, fleet_home):
    cmd = ("sh", "-c", "mkdir -p $FLEET_OUTPUT_DIR; echo partial > $FLEET_OUTPUT_DIR/p.txt; echo started; sleep 300")
    proc = _launch(experiment, ["--gpus", "1", "--json", "--", *cmd], env={"FLEET_GRACE": "3"})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    run_id, lease_id = json.loads(out)["run_id"], json.loads(out)["lease_id"]
    logs = subprocess.Popen([FLEET, "logs", run_id, "-f"], cwd=experiment, stdout=subprocess.PIPE, text=True)
    try:
        assert "started" in logs.stdout.readline()
        down = run_fleet(["down", lease_id], cwd=experiment, timeout=120)
        assert down.returncode == 0 and lease_id in down.stdout, down.stdout + down.stderr
        rest, _ = logs.communicate(timeout=60)   # `logs -f` ends with the run
    finally:
        if logs.poll() is None:
            logs.kill()
    assert logs.returncode == 0
    rec = _record(experiment, run_id)
    assert rec and rec["status"] == "cancelled", rec
    assert (experiment / "runs" / run_id / "node-0" / "p.txt").read_text().strip() == "partial"
    assert [k for _m, k in _ledger(fleet_home, run_id)][-1] == "close"
    assert wait_until(lambda: processes_under(fleet_home) == [], 30), processes_under(fleet_home)


def test_a_dead_supervisor_is_reconciled_by_the_next_fleet_command(experiment, fleet_home):
    proc = _launch(experiment, ["--gpus", "2", "--json", "--", "sh", "-c", "echo started; sleep 300"])
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    run_id, lease_id = json.loads(out)["run_id"], json.loads(out)["lease_id"]
    ident = json.loads((fleet_home / "supervisors" / run_id / "identity.json").read_text())
    os.kill(ident["pid"], signal.SIGKILL)   # no finally-block, no signal handler
    assert wait_until(lambda: _supervisor_gone(fleet_home), 30)
    status = run_fleet(["status", "--json"], cwd=experiment)   # any fleet command reconciles
    assert status.returncode == 0, status.stderr
    assert f"supervisor of run {run_id}" in status.stderr and f"run {run_id} lost" in status.stderr, status.stderr
    assert json.loads(status.stdout)["leases"] == []
    rec = _record(experiment, run_id)
    assert rec and rec["status"] == "lost" and "ledger" in rec["reason"], rec
    rows = _ledger(fleet_home, run_id)
    closed = {m for m, k in rows if k == "close"}
    assert closed == {f"{lease_id}-n0", f"{lease_id}-n1"}, rows   # every second billed, closed
    again = run_fleet(["status"], cwd=experiment)
    assert "lost" not in again.stderr, again.stderr               # reconciled once
    assert processes_under(fleet_home) == []


def test_bad_config_is_refused_by_the_launcher_with_one_line(experiment, fleet_home):
    proc = _launch(experiment, ["--gpus", "1", "--budget", "0.000001", "--", "echo", "hi"])   # $1e-6: valid, too small
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 6, err   # refused before spending: the same exit code as attached
    assert "Traceback" not in err and "budget" in err.lower(), err
    assert wait_until(lambda: _supervisor_gone(fleet_home), 30)


def test_logs_follow_and_attach_from_a_second_fleet_home_sharing_postgres(experiment, fleet_home, tmp_path,
                                                                           postgres_url):
    shared = {"FLEET_STATE_URL": postgres_url}
    # The ranks go on once the test has seen the run live (at most 120 s): with both cores busy, the
    # 4 s of SLOW were over before `fleet status` answered, and the run was gone from it.
    gate = tmp_path / "seen-live"
    gated = ("sh", "-c", f"echo started; i=0; while [ ! -e {gate} ] && [ $i -lt 1200 ]; do sleep 0.1; "
             "i=$((i+1)); done; mkdir -p $FLEET_OUTPUT_DIR; echo result-$FLEET_NODE_RANK > "
             "$FLEET_OUTPUT_DIR/result.txt; echo finished")
    proc = _launch(experiment, ["--gpus", "2", "--json", "--", *gated], env=shared)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    run_id = json.loads(out)["run_id"]
    other = {**shared, "FLEET_HOME": str(tmp_path / "second-home")}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert _run_row(elsewhere, run_id, env=other)["detached"] is True
    errors = tmp_path / "logs-f.err"
    with open(errors, "w") as err_file:
        follow = subprocess.Popen([FLEET, "logs", run_id, "-f"], cwd=elsewhere, env={**os.environ, **other},
                                  stdout=subprocess.PIPE, stderr=err_file, text=True)
    try:
        first = follow.stdout.readline()
        live = _run_row(elsewhere, run_id, env=other).get("status") == "running"
        gate.touch()
        rest = follow.stdout.read()   # to its end: `logs -f` ends with the run (the module's timeout bounds it)
        follow.wait(timeout=60)
    finally:
        gate.touch()
        if follow.poll() is None:
            follow.kill()
    assert follow.returncode == 0, errors.read_text()
    assert first.startswith("[") and live, first   # lines arrive while the run is still going
    seen = first + rest
    assert "[0] started" in seen and "[1] started" in seen and "[1] finished" in seen, seen
    attach = run_fleet(["attach", run_id, "--json"], cwd=elsewhere, env=other, timeout=120)
    assert attach.returncode == 0, attach.stderr
    assert json.loads(attach.stdout)["status"] == "succeeded"
    assert wait_until(lambda: _supervisor_gone(fleet_home), 30)
    # Not read from the supervisor's files: they are gone here, the lines are in the shared state.
    (experiment / "runs" / run_id / "logs").rename(tmp_path / "logs-moved-away")
    again = run_fleet(["logs", run_id], cwd=elsewhere, env=other, timeout=60)
    assert again.returncode == 0, again.stderr
    assert sorted(again.stdout.splitlines()) == sorted(seen.splitlines()), (again.stdout, seen)
