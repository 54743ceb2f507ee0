"""How a run ends when it does not end on its own: controller killed, Ctrl-C in setup, lease
released from outside. Each is judged on what a user sees through the CLI (subprocesses)."""
from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.conftest import processes_under, run_fleet, start_fleet_up, wait_for_line, wait_until


def _leases(cwd: Path) -> list[dict]:
    proc = run_fleet(["status", "--json"], cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["leases"]


def _record(cwd: Path, run_id: str) -> dict | None:
    proc = run_fleet(["runs", "ls", "--json"], cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return next((r for r in json.loads(proc.stdout)["runs"] if r["run_id"] == run_id), None)


def _the_run(cwd: Path) -> tuple[str, str]:
    [lease] = _leases(cwd)
    [run] = lease["runs"]
    assert run["status"] == "running", lease
    return lease["id"], run["id"]


def test_a_run_whose_controller_was_killed_ends_lost_with_a_record_at_down(experiment, fleet_home):
    proc = start_fleet_up(experiment, ["--gpus", "2", "--", "sh", "-c", "echo started; sleep 600"])
    try:
        wait_for_line(proc, "] started", timeout=120)
        lease_id, run_id = _the_run(experiment)
        proc.kill()   # SIGKILL: no finally-block, no signal handler
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _record(experiment, run_id) is None   # nothing recorded yet: only `down` can know

    down = run_fleet(["down", "--all"], cwd=experiment)
    assert down.returncode == 0, down.stderr
    assert f"run {run_id} lost" in down.stderr, down.stderr

    rec = _record(experiment, run_id)
    assert rec is not None and rec["status"] == "lost", rec
    assert rec["lease_id"] == lease_id and rec["ended_at"]
    assert "controller" in rec["reason"] and "gone" in rec["reason"], rec["reason"]
    assert f"lease {lease_id} released by `fleet down` at 20" in rec["reason"], rec["reason"]
    assert "$" in rec["reason"] and "ledger" in rec["reason"], rec["reason"]   # what it cost
    # `fleet logs -f` ends (it used to follow a `running` run forever) and still shows the output.
    logs = run_fleet(["logs", run_id, "-f"], cwd=experiment, timeout=60)
    log_dir = experiment / "runs" / run_id / "logs"
    assert logs.returncode == 0 and "started" in logs.stdout, (
        logs.stdout + logs.stderr + repr({p.name: p.read_text() for p in log_dir.glob("*")}))
    audit = run_fleet(["audit", run_id, "--json"], cwd=experiment)
    assert audit.returncode == 0, audit.stderr
    body = json.loads(audit.stdout)
    assert body["record"]["status"] == "lost" and body["chain_ok"], body
    assert run_fleet(["audit", "--verify"], cwd=experiment).returncode == 0
    assert _leases(experiment) == []
    # A second sweep finds nothing more to end, and never writes the record twice.
    again = run_fleet(["down", "--all"], cwd=experiment)
    assert again.returncode == 0 and "lost" not in again.stderr, again.stderr
    assert processes_under(fleet_home) == []


def test_ctrl_c_during_setup_is_cancelled_130_not_setup_failed(experiment, fleet_home):
    (experiment / "fleet.toml").write_text(
        'project = "t"\ncommand = "echo never"\ntemplate = "local-1gpu"\nmax_duration = "10m"\n'
        'setup = "echo setting-up; sleep 300"\n')
    proc = start_fleet_up(experiment, ["--gpus", "1", "--json"], env={"FLEET_GRACE": "5"})
    try:
        wait_for_line(proc, "] setting-up", timeout=120)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    summary = json.loads(out[out.index("\n{") + 1:] if "\n{" in out else out[out.index("{"):])
    assert summary["status"] == "cancelled" and summary["exit_code"] == 130, summary
    rec = _record(experiment, summary["run_id"])
    assert rec is not None and rec["status"] == "cancelled" and rec["exit_status"] == 130, rec
    assert _leases(experiment) == []
    assert processes_under(fleet_home) == []


@pytest.mark.parametrize("recovery", ["never", "always"])
def test_a_lease_released_from_outside_mid_run_is_an_infrastructure_error(experiment, fleet_home, recovery):
    """Never resumed, whatever `recovery` says: the user ended the run (docs/managed-runs.md)."""
    with (experiment / "fleet.toml").open("a") as toml:
        toml.write(f'recovery = "{recovery}"\nmax_restarts = 2\n')
    proc = start_fleet_up(experiment, ["--gpus", "2", "--json", "--", "sh", "-c", "echo started; sleep 600"])
    try:
        wait_for_line(proc, "] started", timeout=120)
        lease_id, run_id = _the_run(experiment)
        down = run_fleet(["down", lease_id], cwd=experiment)   # "another shell"
        assert down.returncode == 0, down.stderr
        assert "lost" not in down.stderr   # its controller lives: it ends the run itself
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 10, out
    summary = json.loads(out[out.index("\n{") + 1:])
    assert summary["status"] == "error" and summary["exit_code"] == 10, summary
    assert f"lease {lease_id} was released from outside this run at 20" in summary["message"], summary
    assert "did not fail" in summary["message"] and summary["failing_rank"] in ("0", "1"), summary
    assert "exit -1" not in out and "Traceback" not in out, out
    assert "resuming on new machines" not in out and not summary.get("machines_lost"), out
    rec = _record(experiment, run_id)
    assert rec is not None and rec["status"] == "error" and rec["exit_status"] == 10, rec
    assert _record(experiment, f"{run_id}-a2") is None   # no second attempt, no second lease
    assert wait_until(lambda: not processes_under(fleet_home), 30), processes_under(fleet_home)
    assert _leases(experiment) == []
