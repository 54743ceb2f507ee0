"""Checkpoints through the CLI: $FLEET_CHECKPOINT_DIR uploaded while the command runs
(checkpoint_interval), when it ends and after the SIGTERM of a stop; `fleet up --resume RUN`
restores each node's latest checkpoint before the command starts (FLEET_RESUMED, FLEET_ATTEMPT)."""
from __future__ import annotations

import json
import signal
from pathlib import Path

from tests.conftest import run_fleet, start_fleet_up, wait_for_line

TRAIN = '''
import json, os, pathlib, signal, sys, time
ck = pathlib.Path(os.environ["FLEET_CHECKPOINT_DIR"]) / "state.json"
step = json.loads(ck.read_text())["step"] if ck.exists() else 0
rank = os.environ["FLEET_NODE_RANK"]
print(f"rank {rank} attempt {os.environ['FLEET_ATTEMPT']} resumed {os.environ.get('FLEET_RESUMED', '0')} from {step}",
      flush=True)

def save():
    tmp = ck.with_suffix(".tmp")
    tmp.write_text(json.dumps({"step": step}))
    os.replace(tmp, ck)

def stop(*_):
    save()
    print(f"saved at {step} on SIGTERM", flush=True)
    sys.exit(143)

signal.signal(signal.SIGTERM, stop)
target = int(sys.argv[1])
pause = float(sys.argv[2]) if len(sys.argv) > 2 else 0
if len(sys.argv) > 3 and os.environ['FLEET_ATTEMPT'] != '1':
    pause = float(sys.argv[3])   # a resumed attempt's pace: only where it resumed from is checked
while step < target:
    step += 1
    save()
    time.sleep(pause)
print(f"rank {rank} finished at {step}", flush=True)
'''


# The same training, except that attempt 1 holds at step 5 until something ends it (a lost machine,
# a reap): on a loaded machine the plain one could finish before the test took its machine away,
# and there was nothing left to recover.
TRAIN_HELD_IN_ATTEMPT_1 = TRAIN.replace(
    "    save()\n    time.sleep(pause)\n",
    "    save()\n    time.sleep(pause)\n    while step >= 5 and os.environ['FLEET_ATTEMPT'] == '1':\n        time.sleep(0.1)\n")
assert TRAIN_HELD_IN_ATTEMPT_1 != TRAIN

def _write(experiment: Path, extra: str = "") -> None:
    (experiment / "train.py").write_text(TRAIN)
    (experiment / "fleet.toml").write_text('project = "t"\ntemplate = "local-1gpu"\nmax_duration = "10m"\n'
                                           'command = "python train.py 3"\n' + extra)


def _up(experiment: Path, *args: str) -> dict:
    proc = run_fleet(["up", "--json", *args], cwd=experiment, timeout=180)
    assert proc.stdout, proc.stderr
    return {**json.loads(proc.stdout), "_stderr": proc.stderr}


def test_resume_restores_every_node_and_counts_the_attempt(experiment, fleet_home):
    _write(experiment)
    first = _up(experiment, "--gpus", "2")
    assert first["status"] == "succeeded", first["_stderr"]
    assert set(first["checkpoints"]) == {"0", "1"}, first
    assert "attempt" not in first
    assert "rank 0 attempt 1 resumed 0 from 0" in first["_stderr"]

    second = _up(experiment, "--gpus", "2", "--resume", first["run_id"], "--", "python", "train.py", "5")
    assert second["status"] == "succeeded", second["_stderr"]
    assert second["attempt"] == 2
    for rank in (0, 1):
        assert f"rank {rank} attempt 2 resumed 1 from 3" in second["_stderr"], second["_stderr"]
        assert f"rank {rank} finished at 5" in second["_stderr"]
    third = _up(experiment, "--gpus", "2", "--resume", second["run_id"], "--", "python", "train.py", "6")
    assert third["attempt"] == 3 and "rank 1 attempt 3 resumed 1 from 5" in third["_stderr"], third["_stderr"]


def test_the_checkpoint_written_on_sigterm_is_uploaded_and_resumable(experiment, fleet_home):
    _write(experiment)
    proc = start_fleet_up(experiment, ["--gpus", "1", "--json", "--", "python", "train.py", "100000", "0.05"],
                          env={"FLEET_GRACE": "20"})
    try:
        wait_for_line(proc, "attempt 1", timeout=120)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    summary = json.loads(out[out.index("{"):])
    assert summary["status"] == "cancelled" and summary["checkpoints"], out
    saved = int(out.split("saved at ")[1].split()[0])
    assert saved > 0, out
    resumed = _up(experiment, "--gpus", "1", "--resume", summary["run_id"], "--", "python", "train.py", str(saved + 2))
    assert f"attempt 2 resumed 1 from {saved}" in resumed["_stderr"], resumed["_stderr"]
    assert f"finished at {saved + 2}" in resumed["_stderr"]


def test_checkpoint_interval_uploads_while_the_command_runs(experiment, fleet_home):
    _write(experiment, 'checkpoint_interval = "1s"\n')
    result = _up(experiment, "--gpus", "1", "--", "python", "train.py", "30", "0.2")
    assert result["status"] == "succeeded", result["_stderr"]
    before_end = result["_stderr"].split("finished at 30")[0]
    assert before_end.count("fleet: checkpoint:") >= 2, result["_stderr"]   # while it ran, not only at the end


def test_resume_of_a_run_without_checkpoints_is_one_clear_line(experiment, fleet_home):
    _write(experiment)
    plain = _up(experiment, "--gpus", "1", "--", "echo", "no checkpoint")
    proc = run_fleet(["up", "--resume", plain["run_id"]], cwd=experiment)
    assert proc.returncode == 2 and "left no checkpoint" in proc.stderr, proc.stderr


def test_a_rerun_of_a_resumed_run_starts_from_the_checkpoint_it_started_from(experiment, fleet_home):
    """The checkpoint a resumed attempt starts from is one of its inputs: a rerun started from
    scratch (`from 0`) ran something else and said nothing. The record now names it (so no
    `snapshot rm`/`gc` takes it) and the rerun restores it."""
    _write(experiment)
    first = _up(experiment, "--gpus", "1")
    assert first["status"] == "succeeded", first["_stderr"]
    second = _up(experiment, "--gpus", "1", "--resume", first["run_id"], "--", "python", "train.py", "5")
    assert "rank 0 attempt 2 resumed 1 from 3" in second["_stderr"], second["_stderr"]
    again = run_fleet(["rerun", second["run_id"]], cwd=experiment, timeout=180)
    assert again.returncode == 0, again.stderr
    said = again.stdout + again.stderr
    assert "rank 0 attempt 2 resumed 1 from 3" in said and "from 0" not in said, said
    record = json.loads(run_fleet(["runs", "show", second["run_id"], "--json"], cwd=experiment).stdout)
    ckpt = record["resumed"]["checkpoints"]["0"]
    assert record["resumed"]["attempt"] == 2 and ckpt == first["checkpoints"]["0"], record["resumed"]
    shown = run_fleet(["runs", "show", second["run_id"]], cwd=experiment).stdout
    assert f"resumed_from         {first['run_id']}" in shown and ckpt in shown, shown
    removed = run_fleet(["snapshot", "rm", ckpt], cwd=experiment)
    assert "kept" in removed.stdout + removed.stderr and second["run_id"] in removed.stdout + removed.stderr


def test_the_checkpoint_a_running_attempt_started_from_is_kept_by_snapshot_rm(experiment, fleet_home):
    """Until a resumed attempt ends, only its state row can name the checkpoint it started from:
    `snapshot rm` then `gc` took it, and the record written at the end named a snapshot gone."""
    _write(experiment)
    first = _up(experiment, "--gpus", "1")
    ckpt = first["checkpoints"]["0"]
    proc = start_fleet_up(experiment, ["--gpus", "1", "--resume", first["run_id"], "--", "python", "train.py",
                                       "100000", "0.05"])
    try:
        wait_for_line(proc, "attempt 2 resumed 1 from 3", timeout=120)
        removed = run_fleet(["snapshot", "rm", ckpt, "--json"], cwd=experiment)
        assert removed.returncode == 0, removed.stderr
        kept = json.loads(removed.stdout)["kept_for_runs"]
    finally:       # stopped as a user would, so its machines end with it
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    assert len(kept) == 1, removed.stdout
    assert run_fleet(["snapshot", "gc", "--grace", "0"], cwd=experiment).returncode == 0
    assert run_fleet(["snapshot", "verify", ckpt], cwd=experiment).returncode == 0
