"""`fleet up` inside a simulated GitHub Actions job (the CLI as a subprocess, local machines):
job summary and step outputs for every ending, exit codes, cancellation, secrets masked."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import (DIGITS, FLEET, REPO, processes_under, run_fleet, start_fleet_up, wait_for_line,
                            wait_until)

SHA = "0123456789abcdef0123456789abcdef01234567"
CANARY = "canary-7f3a9c21-do-not-print"          # a secret the experiment receives (config.secrets)
CANARY2 = "second-canary-b81e0d55"               # a controller-side secret named in FLEET_SECRET_NAMES

TRAIN = '''\
import json, os, sys, time
rank = int(os.environ["FLEET_NODE_RANK"])
print(f"rank {rank}: training", flush=True)
out = os.environ["FLEET_OUTPUT_DIR"]
os.makedirs(out, exist_ok=True)
# the same shape as examples/digits' metrics.json
json.dump({"accuracy": 0.9 + rank / 100, "loss": 0.25 - rank / 100, "train_accuracy": 0.95, "rank": rank,
           "world_size": int(os.environ["FLEET_NUM_NODES"]), "loss_history": [1.0, 0.5], "epochs": 2, "seed": 1},
          open(os.path.join(out, "metrics.json"), "w"))
if os.environ.get("LEAK"):
    print("key is", os.environ.get("API_KEY"), flush=True)
    print("key on stderr", os.environ.get("API_KEY"), file=sys.stderr, flush=True)
    open(os.path.join(out, "notes.txt"), "w").write("key=" + os.environ.get("API_KEY", ""))
sleep = float(os.environ.get("SLEEP", "0"))
if sleep:
    print("started", flush=True)
    time.sleep(sleep)
sys.exit(int(os.environ.get(f"EXIT_RANK_{rank}", "0")))
'''


@pytest.fixture
def gh(tmp_path, experiment):
    """A GitHub Actions job for a pull request: env, step-summary and output files."""
    (experiment / "train.py").write_text(TRAIN)
    _config(experiment)
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"number": 42, "pull_request": {"number": 42}}))
    files = {"summary": tmp_path / "step-summary.md", "output": tmp_path / "github-output.txt"}
    for f in files.values():
        f.write_text("")
    env = {"CI": "true", "GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(files["summary"]),
           "GITHUB_OUTPUT": str(files["output"]), "GITHUB_SHA": SHA, "GITHUB_REF": "refs/pull/42/merge",
           "GITHUB_HEAD_REF": "feature/wider-mlp", "GITHUB_REF_NAME": "42/merge", "GITHUB_RUN_ID": "9876543210",
           "GITHUB_RUN_ATTEMPT": "1", "GITHUB_REPOSITORY": "acme/vision", "GITHUB_SERVER_URL": "https://github.com",
           "GITHUB_EVENT_NAME": "pull_request", "GITHUB_EVENT_PATH": str(event), "GITHUB_WORKFLOW": "train",
           "API_KEY": CANARY, "FLEET_SECRET_NAMES": "OTHER_TOKEN", "OTHER_TOKEN": CANARY2}
    return env, files


def _config(experiment: Path, extra: str = "", **machine_env: str) -> None:
    """fleet.toml for the fake trainer; machine_env reaches the experiment through [env]."""
    env = "".join(f'{k} = "{v}"\n' for k, v in machine_env.items())
    (experiment / "fleet.toml").write_text('project = "t"\ntemplate = "local-1gpu"\ncommand = "python train.py"\n'
                                           f'secrets = ["API_KEY"]\nmax_duration = "10m"\n{extra}[env]\n{env}')


def _outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_success_writes_job_summary_outputs_and_ci_context(experiment, fleet_home, gh):
    env, files = gh
    proc = run_fleet(["up", "--gpus", "2", "--json"], cwd=experiment, env=env)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["status"] == "succeeded" and summary["released"]
    ci = summary["ci"]
    assert ci["provider"] == "github" and ci["sha"] == SHA and ci["pr"] == 42
    assert ci["branch"] == "feature/wider-mlp"
    assert ci["run_url"] == "https://github.com/acme/vision/actions/runs/9876543210"
    # plain CI lines: rank-prefixed logs, no terminal control sequences
    assert "[0] rank 0: training" in proc.stderr and "[1] rank 1: training" in proc.stderr
    assert "\x1b[" not in proc.stdout + proc.stderr
    md = files["summary"].read_text()
    assert "succeeded" in md and "exit 0" in md and "PR #42" in md and SHA[:12] in md
    assert "GPU-hours" in md and "Cost" in md and ci["run_url"] in md
    assert re.search(r"\| 0 \| 0\.9 \| 0\.25 \| 0\.95 \|", md), md
    assert re.search(r"\| 1 \| 0\.91 \| 0\.24 \| 0\.95 \|", md), md
    assert re.search(r"\| \*\*mean\*\* \| 0\.905 \| 0\.245 \|", md), md
    out = _outputs(files["output"])
    assert out["run-id"] == summary["run_id"] and out["exit-status"] == "0" and out["status"] == "succeeded"
    merged = json.loads(Path(out["metrics-path"]).read_text())
    assert merged["mean"]["accuracy"] == pytest.approx(0.905) and set(merged["ranks"]) == {"0", "1"}
    assert out["cost"] and float(out["cost"]) >= 0
    assert Path(out["outputs-dir"]) == Path(summary["run_dir"])
    assert (Path(out["outputs-dir"]) / "ci-summary.md").read_text() == md
    # the run record keeps where the run came from
    runs = run_fleet(["runs", "show", summary["run_id"], "--json"], cwd=experiment)
    assert runs.returncode == 0, runs.stderr
    record_ci = json.dumps(json.loads(runs.stdout)["ci"])
    assert SHA in record_ci and "9876543210" in record_ci
    assert processes_under(fleet_home) == []


def test_experiment_failure_passes_its_exit_code_and_summary_says_failed(experiment, fleet_home, gh):
    env, files = gh
    _config(experiment, EXIT_RANK_1="3")
    proc = run_fleet(["up", "--gpus", "2", "--ci"], cwd=experiment, env=env)
    assert proc.returncode == 3, proc.stderr
    md = files["summary"].read_text()
    assert "failed" in md and "exit 3" in md and "First failing rank | 1" in md
    out = _outputs(files["output"])
    assert out["exit-status"] == "3" and out["status"] == "failed"
    assert processes_under(fleet_home) == []


def test_budget_stop_ends_budget_stopped_exit_11_with_summary(experiment, fleet_home, gh):
    env, files = gh
    # $3600/h per machine = $1/s: a $6 budget with a 1 s grace stops the run within seconds
    _config(experiment, 'budget = 6\n[budgets]\ngrace = "1s"\n[prices]\nlocal-1gpu = 3600\n', SLEEP="120")
    proc = run_fleet(["up", "--gpus", "1"], cwd=experiment, env=env, timeout=90)
    assert proc.returncode == 11, proc.stderr
    md = files["summary"].read_text()
    assert "budget-stopped" in md and "exit 11" in md and "budget" in md
    out = _outputs(files["output"])
    assert out["exit-status"] == "11" and out["status"] == "budget-stopped" and out["cost"]
    assert processes_under(fleet_home) == []


def _signalled(proc, sig, fleet_home, within_s: float) -> tuple[float, str]:
    """Send `sig` (and no other): the seconds until no process of fleet's is left, and the output once
    fleet has exited."""
    t0 = time.monotonic()
    proc.send_signal(sig)
    assert wait_until(lambda: not processes_under(fleet_home), within_s), processes_under(fleet_home)
    released_after = time.monotonic() - t0
    out, _ = proc.communicate(timeout=30)
    return released_after, out


def test_sigterm_mid_run_releases_machines_fetches_outputs_and_reports_cancelled(experiment, fleet_home, gh):
    env, files = gh
    _config(experiment, SLEEP="300")
    proc = start_fleet_up(experiment, ["--gpus", "2"], env)
    try:
        wait_for_line(proc, "started")
        released_after, out = _signalled(proc, signal.SIGTERM, fleet_home, within_s=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    # inside GitHub's SIGINT→SIGTERM window (~7.5 s): the experiment got a 3 s graceful stop
    assert released_after < 7.5, released_after
    md = files["summary"].read_text()
    assert "cancelled" in md and "exit 130" in md and "SIGTERM" in md
    outs = _outputs(files["output"])
    assert outs["status"] == "cancelled" and outs["exit-status"] == "130"
    assert "0.9" in Path(outs["metrics-path"]).read_text()   # outputs written before the cancel came home


def test_a_cancel_while_inputs_are_copied_stops_the_copy_and_releases_at_once(experiment, fleet_home, gh):
    """The first signal of a cancelled job used to let staging run to its end (gigabytes of data:
    minutes), past the runner's SIGKILL, which left the machines billed up to their deadline."""
    env, files = gh
    (experiment / "bulk").mkdir()
    with open(experiment / "bulk" / "shards.bin", "wb") as f:     # incompressible, no chunk repeated
        for _ in range(64):
            f.write(os.urandom(8 << 20))
    _config(experiment, '[data]\nbulk = "bulk"\n')
    proc = start_fleet_up(experiment, ["--gpus", "1"], env)
    try:
        wait_for_line(proc, "stage: copying inputs")
        time.sleep(0.3)
        released_after, out = _signalled(proc, signal.SIGINT, fleet_home, within_s=30)   # GitHub's first signal
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert released_after < 2.5, (released_after, out)
    assert "pinned inputs" not in out, out
    assert _outputs(files["output"])["status"] == "cancelled"


def test_a_cancel_while_inputs_are_hashed_exits_130_with_a_summary(experiment, fleet_home, gh):
    """Before leasing, SIGTERM (a runner's cancel) killed fleet outright: exit 143, no job summary
    and no step outputs for the steps after it, which the docs promise for every ending."""
    env, files = gh
    (experiment / "bulk").mkdir()
    with open(experiment / "bulk" / "shards.bin", "wb") as f:
        for _ in range(64):
            f.write(os.urandom(8 << 20))
    _config(experiment, '[data]\nbulk = "bulk"\n')
    proc = start_fleet_up(experiment, ["--gpus", "1"], env)
    try:
        assert wait_until(lambda: (fleet_home / "store").exists(), 30)   # hashing the inputs into it
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert "Traceback" not in out, out
    outs = _outputs(files["output"])
    assert outs["status"] == "cancelled" and outs["exit-status"] == "130"
    assert "cancelled (exit 130)" in files["summary"].read_text()
    assert not processes_under(fleet_home)


def test_a_second_signal_cuts_a_long_fetch_short_and_releases_before_the_sigkill(experiment, fleet_home, gh):
    """GitHub: SIGINT, SIGTERM 7.5 s later, SIGKILL soon after. The second signal let a fetch of
    gigabytes of outputs run on, then the outputs were hashed into the store, before the release
    and the summary: past the SIGKILL, machines up to their deadline and no summary."""
    env, files = gh
    (experiment / "big.py").write_text("import os, time\nout = os.environ['FLEET_OUTPUT_DIR']\n"
                                       "os.makedirs(out, exist_ok=True)\n"
                                       "with open(os.path.join(out, 'ckpt.bin'), 'wb') as f:\n"
                                       "    for _ in range(128):\n        f.write(os.urandom(8 << 20))\n"
                                       "print('started', flush=True)\ntime.sleep(300)\n")
    _config(experiment)
    toml = experiment / "fleet.toml"
    toml.write_text(toml.read_text().replace("python train.py", "python big.py"))
    proc = start_fleet_up(experiment, ["--gpus", "1"], env)
    try:
        wait_for_line(proc, "started", timeout=120)
        proc.send_signal(signal.SIGINT)
        wait_for_line(proc, "collect: fetching")
        time.sleep(0.3)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        ended_after = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert ended_after < 2.0, (ended_after, out)
    assert "the rest was not fetched" in out, out
    assert not processes_under(fleet_home)
    assert _outputs(files["output"])["status"] == "cancelled"


def test_runner_killed_machines_end_at_their_own_deadline(experiment, fleet_home, gh):
    env, _files = gh
    ttl = 3
    _config(experiment, SLEEP="300")
    proc = start_fleet_up(experiment, ["--gpus", "2"], {**env, "FLEET_HEARTBEAT_TTL": str(ttl)})
    wait_for_line(proc, "started")
    assert processes_under(fleet_home)
    proc.kill()   # only the controller, like a runner that vanished: no handler, no release
    proc.wait()
    proc.stdout.close()
    assert wait_until(lambda: not processes_under(fleet_home), ttl + 10), processes_under(fleet_home)
    assert run_fleet(["down", "--all"], cwd=experiment, env=env).returncode == 0


def test_secrets_are_masked_everywhere_fleet_writes(experiment, fleet_home, gh):
    env, files = gh
    _config(experiment, LEAK="1")
    proc = run_fleet(["up", "--gpus", "1", "--json"], cwd=experiment, env=env)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    # the runner is told to hide both values; those command lines are the only place they appear
    assert f"::add-mask::{CANARY}" in proc.stderr and f"::add-mask::{CANARY2}" in proc.stderr
    for line in (proc.stdout + proc.stderr).splitlines():
        if CANARY in line or CANARY2 in line:
            assert line.startswith("::add-mask::"), line
    assert "key is ***" in proc.stderr and "key on stderr ***" in proc.stderr
    for f in files.values():
        assert CANARY not in f.read_text() and CANARY2 not in f.read_text()
    for path in Path(summary["run_dir"]).rglob("*"):     # logs and outputs go to upload-artifact
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path


def test_a_log_line_cannot_forge_a_workflow_command_through_a_carriage_return(experiment, fleet_home, gh):
    """The runner reads a carriage return as a line break: the text after one in an experiment's line
    started a line of its own, without the rank prefix, that the runner obeyed (stop-commands hides
    every later line of the job, fleet's own ::add-mask:: included). A progress bar shows as its last state."""
    env, _ = gh
    (experiment / "forge.py").write_text("import sys\n"
                                         "sys.stdout.write('50%\\r::stop-commands::pwn\\n')\n"
                                         "sys.stderr.write('\\r::error::forged\\r\\n')\n"
                                         "sys.stdout.write('\\r'.join(f'{i}%' for i in range(0, 101, 10)) + '\\n')\n")
    (experiment / "fleet.toml").write_text('project = "t"\ntemplate = "local-1gpu"\ncommand = "python forge.py"\n'
                                           'max_duration = "10m"\n')
    for args in (["up", "--gpus", "1"], ["up", "--gpus", "1", "--json"]):
        proc = run_fleet(args, cwd=experiment, env=env)
        assert proc.returncode == 0, proc.stderr
        as_the_runner_reads = re.split(r"\r\n|\r|\n", proc.stdout + proc.stderr)
        commands = [line for line in as_the_runner_reads if line.lstrip().startswith("::")]
        assert [c for c in commands if not c.startswith("::add-mask::")] == [], args   # fleet's own only
        assert "[0] ::stop-commands::pwn" in proc.stdout + proc.stderr and "[0] 100%" in proc.stdout + proc.stderr
        assert "[0] 50%" not in proc.stdout + proc.stderr


def test_failure_before_leasing_still_writes_the_summary(experiment, fleet_home, gh):
    env, files = gh
    (experiment / "fleet.toml").write_text('project = "t"\ncommand = "true"\ngpus = "many"\n')
    proc = run_fleet(["up"], cwd=experiment, env=env)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    md = files["summary"].read_text()
    assert "error" in md and "exit 2" in md and "fleet.toml:3" in md
    assert _outputs(files["output"])["exit-status"] == "2"


def test_sigint_then_sigterm_right_after_leasing_still_releases_quickly(experiment, fleet_home, gh):
    """GitHub's order (SIGINT, then SIGTERM) arriving while machines are still coming up."""
    env, files = gh
    _config(experiment, SLEEP="300")
    proc = start_fleet_up(experiment, ["--gpus", "2"], env)
    try:
        wait_for_line(proc, "fleet: lease:")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)     # the second signal hurries: no graceful waits
        out, _ = proc.communicate(timeout=60)
        exited_after = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert exited_after < 7.5, (exited_after, out)
    assert processes_under(fleet_home) == []
    assert "cancelled" in files["summary"].read_text()
    assert _outputs(files["output"])["exit-status"] == "130"


def _action_step(name: str) -> str:
    from ruamel.yaml import YAML   # comes with check-jsonschema (dev extra)
    action = YAML(typ="safe").load((REPO / "action.yml").read_text())
    [step] = [s for s in action["runs"]["steps"] if s.get("id") == name]
    return step["run"]


def test_the_actions_step_trains_digits_and_sets_the_steps_outputs(tmp_path, fleet_home, gh):
    """action.yml's `fleet up` step as the runner runs it (bash -e, inputs as env), on examples/digits."""
    env, files = gh
    exp = tmp_path / "digits"
    shutil.copytree(DIGITS, exp, ignore=shutil.ignore_patterns("runs", "outputs", "__pycache__"))
    script = tmp_path / "step.sh"
    script.write_text(_action_step("up"))
    inputs = {"FLEET_CONFIG": "fleet.toml", "FLEET_GPUS": "2", "FLEET_PROVIDER": "local", "FLEET_BUDGET": "",
              "FLEET_ARGS": "--max-duration 10m", "FLEET_SECRET_NAMES": ""}
    proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], cwd=exp,
                          env={**os.environ, **env, **inputs, "PATH": f"{Path(FLEET).parent}:{os.environ['PATH']}"},
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = _outputs(files["output"])
    assert out["status"] == "succeeded" and out["exit-status"] == "0"
    merged = json.loads(Path(out["metrics-path"]).read_text())
    assert set(merged["ranks"]) == {"0", "1"} and merged["mean"]["accuracy"] > 0.5
    md = files["summary"].read_text()
    assert "| rank | accuracy | loss | train_accuracy | epochs | shard_size |" in md, md
    assert Path(out["outputs-dir"]).is_dir() and list(Path(out["outputs-dir"]).glob("node-*/metrics.json"))
    assert processes_under(fleet_home) == []
