"""Recovery from a machine that vanished mid-run, on the local provider (its sshd and every process
of the machine killed, as a host failure would): with `recovery = "always"` the run resumes on new
machines from the last checkpoint and finishes with the right step count; with "never" or no
restarts left it ends with a clear message and nothing left running."""
from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import processes_under, start_fleet_up, wait_for_line
from tests.e2e.test_checkpoints import TRAIN


def _config(experiment: Path, recovery: str, max_restarts: int = 3) -> None:
    (experiment / "train.py").write_text(TRAIN)
    (experiment / "fleet.toml").write_text(
        'project = "t"\ntemplate = "local-1gpu"\nmax_duration = "10m"\ncommand = "python train.py 40 0.1"\n'
        f'checkpoint_interval = "1s"\nrecovery = "{recovery}"\nmax_restarts = {max_restarts}\n')


def _lose_node_1(fleet_home: Path) -> None:
    from fleet.providers.local.sshd import stop_machine_dir
    [machine] = [d for d in (fleet_home / "machines").iterdir() if d.name.endswith("-n1")]
    stop_machine_dir(machine, grace_s=0.1)


def _run_until_lost(experiment: Path, fleet_home: Path) -> tuple[dict, str]:
    proc = start_fleet_up(experiment, ["--gpus", "2", "--json"], env={"FLEET_GRACE": "10"})
    try:
        seen = wait_for_line(proc, "attempt 1", timeout=120)
        seen += wait_for_line(proc, "fleet: checkpoint:", timeout=60)   # a periodic upload happened
        _lose_node_1(fleet_home)
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = seen + out
    return json.loads(out[out.index("\n{") + 1:]), out


def test_a_lost_machine_is_replaced_and_the_run_resumes_from_its_checkpoint(experiment, fleet_home):
    _config(experiment, "always")
    summary, out = _run_until_lost(experiment, fleet_home)
    assert summary["status"] == "succeeded" and summary["exit_code"] == 0, out[-3000:]
    assert summary["attempt"] == 2 and summary["run_id"].endswith("-a2"), summary
    first, second = summary["attempts"]
    assert first["machines_lost"] and first["status"] == "error" and "lost" in first["message"], first
    assert second["status"] == "succeeded" and second["lease_id"] != first["lease_id"]
    for rank in (0, 1):
        assert f"[{rank}] rank {rank} attempt 2 resumed 1 from " in out, out[-3000:]
        assert f"rank {rank} finished at 40" in out
    resumed_from = int(out.split("[1] rank 1 attempt 2 resumed 1 from ")[1].split()[0])
    assert resumed_from > 0, out[-3000:]   # node 1 continued from its last uploaded checkpoint
    assert "resuming on new machines" in out
    from tests.conftest import run_fleet
    shown = run_fleet(["runs", "show", summary["run_id"], "--json"], cwd=experiment)
    record = json.loads(shown.stdout)   # the last attempt's run record lists every attempt
    assert [a["attempt"] for a in record["attempts"]] == [1, 2] and record["resumed_from"] == first["run_id"]
    assert processes_under(fleet_home) == []


def test_recovery_never_ends_the_run_as_an_error(experiment, fleet_home):
    _config(experiment, "never")
    summary, out = _run_until_lost(experiment, fleet_home)
    assert summary["status"] == "error" and summary["exit_code"] == 10 and summary["machines_lost"], out[-3000:]
    assert "attempts" not in summary and "resuming" not in out
    assert processes_under(fleet_home) == []


def test_no_restarts_left_fails_with_a_clear_message_and_nothing_running(experiment, fleet_home):
    _config(experiment, "always", max_restarts=0)
    summary, out = _run_until_lost(experiment, fleet_home)
    assert summary["status"] == "failed" and summary["exit_code"] == 10, out[-3000:]
    assert "max_restarts (0) is used up after 1 attempt:" in summary["message"], summary["message"]
    assert [a["attempt"] for a in summary["attempts"]] == [1]
    assert processes_under(fleet_home) == []
    assert not any((fleet_home / "machines").iterdir())


def test_a_detached_run_recovers_and_attach_follows_it_into_the_next_attempt(experiment, fleet_home):
    from fleet.run.checkpoints import ref_name
    from fleet.snapshots import open_store
    from tests.conftest import run_fleet, wait_until
    _config(experiment, "always")
    up = run_fleet(["up", "-d", "--gpus", "2", "--json"], cwd=experiment, timeout=120)
    assert up.returncode == 0, up.stderr
    run_id = json.loads(up.stdout)["run_id"]
    store = open_store(str(fleet_home / "store"))
    assert wait_until(lambda: store.get_ref(ref_name(run_id, 1)) is not None, 60)   # a periodic upload landed
    _lose_node_1(fleet_home)
    attach = run_fleet(["attach", run_id, "--json"], cwd=experiment, timeout=240)
    assert attach.returncode == 0, attach.stderr[-3000:]
    assert f"following its next attempt, run {run_id}-a2" in attach.stderr, attach.stderr[-3000:]
    assert "rank 1 attempt 2 resumed 1 from " in attach.stderr and "rank 1 finished at 40" in attach.stderr
    final = json.loads(attach.stdout)
    assert final["status"] == "succeeded" and final["run_id"] == f"{run_id}-a2" and len(final["attempts"]) == 2
    assert wait_until(lambda: processes_under(fleet_home) == [], 30), processes_under(fleet_home)


def test_down_of_a_detached_runs_first_lease_stops_the_run_where_recovery_moved_it(experiment, fleet_home):
    """`fleet up -d` printed lease L1; recovery moved the run to L2. `fleet down L1` is the user
    stopping the run: it must reach L2, not answer "nothing to release" and leave L2 running."""
    from fleet.run.checkpoints import ref_name
    from fleet.snapshots import open_store
    from fleet.state import open_state
    from tests.conftest import run_fleet, wait_until
    _config(experiment, "always")
    up = run_fleet(["up", "-d", "--gpus", "2", "--json"], cwd=experiment, timeout=120)
    assert up.returncode == 0, up.stderr
    run_id, first = json.loads(up.stdout)["run_id"], json.loads(up.stdout)["lease_id"]
    store = open_store(str(fleet_home / "store"))
    assert wait_until(lambda: store.get_ref(ref_name(run_id, 1)) is not None, 60)
    _lose_node_1(fleet_home)
    state = open_state()

    def second_running() -> bool:
        rows = state.db.execute("SELECT status, lease_id FROM runs WHERE id = ?", (f"{run_id}-a2",))
        return bool(rows) and rows[0]["status"] == "running"

    assert wait_until(second_running, 120)
    second = state.db.execute("SELECT lease_id FROM runs WHERE id = ?", (f"{run_id}-a2",))[0]["lease_id"]
    assert second != first and state.lease_status(first)[0] == "released"
    down = run_fleet(["down", first, "--json"], cwd=experiment, timeout=180)
    assert down.returncode == 0, down.stderr
    assert json.loads(down.stdout)["released"] == [second]
    assert f"run {run_id} goes on as {run_id}-a2 on {second}" in down.stderr
    assert state.lease_status(second)[0] == "released"
    assert state.get_run(f"{run_id}-a2")["status"] == "cancelled"
    assert not state.db.execute("SELECT id FROM runs WHERE id = ?", (f"{run_id}-a3",))
    assert wait_until(lambda: processes_under(fleet_home) == [], 30), processes_under(fleet_home)
    state.close()
