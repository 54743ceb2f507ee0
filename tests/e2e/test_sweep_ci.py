"""`fleet sweep` in a cancelled GitLab job: one SIGTERM, then SIGKILL after the executor's grace,
and no second signal. The sweep ran outside CI mode whatever CI said, so it waited out its trial's
whole grace (FLEET_GRACE, 60 s here) before it released the pool: past the SIGKILL, machines left
to their deadline. Now it takes FLEET_STOP_LIMIT (default 5 s) as `fleet up` does, then hurries:
the trial is ended, the pool released, and the sweep exits 130."""
from __future__ import annotations

import os
import re
import subprocess

from fleet.ci import GITLAB_STOP_LIMIT_S
from tests.conftest import FLEET, one_sigterm, run_fleet, wait_for_line


def test_one_sigterm_under_gitlab_ends_a_sweep_within_its_stop_limit(experiment, fleet_home):
    (experiment / "fleet.toml").write_text('project = "t"\ncommand = "true"\ntemplate = "local-1gpu"\n'
                                           'max_duration = "10m"\n')
    # A trial that takes its whole grace; it prints a line its command does not hold (the sweep names it).
    script = "trap '' TERM HUP INT; echo trial-up-$(({x} + 1000)); sleep 300"
    env = {k: v for k, v in os.environ.items() if k != "FLEET_STOP_LIMIT"}
    env.update(CI="true", GITLAB_CI="true", FLEET_GRACE="60", CI_PROJECT_PATH="acme/vision",
               CI_COMMIT_SHA="0" * 40)
    proc = subprocess.Popen([FLEET, "sweep", "--param", "x=1", "--", "sh", "-c", script], cwd=experiment,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        wait_for_line(proc, "trial-up-1001", timeout=120)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    released_after, ended_after, out = one_sigterm(proc, fleet_home, released_within=40, stop_wait=90)
    assert released_after is not None and ended_after is not None, (released_after, out[-3000:])
    assert released_after < GITLAB_STOP_LIMIT_S + 8, (released_after, out[-3000:])
    assert proc.returncode == 130, out[-3000:]
    assert "5s since SIGTERM (FLEET_STOP_LIMIT)" in out, out[-3000:]
    assert "\x1b[" not in out                             # CI mode: plain lines, no live display


def test_a_sweep_in_ci_mode_scrubs_its_trials_outputs_as_fleet_up_does(experiment, fleet_home):
    """In CI mode `fleet up` masks the secrets in every text file of its run directory (an artifact
    carries it); the sweep scrubbed only its pool's directory, and a trial's fetched output kept
    the token as the trial had written it."""
    (experiment / "fleet.toml").write_text('project = "t"\ncommand = "true"\ntemplate = "local-1gpu"\n'
                                           'max_duration = "10m"\nsecrets = ["MY_TOKEN"]\n')
    script = 'mkdir -p "$FLEET_OUTPUT_DIR"; echo "token $MY_TOKEN x={x}" > "$FLEET_OUTPUT_DIR/out.txt"'
    proc = run_fleet(["sweep", "--allow-dirty", "--param", "x=1", "--", "sh", "-c", script], cwd=experiment,
                     env={"CI": "true", "MY_TOKEN": "tok-4f9a1c77e2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    [out] = list((experiment / "runs").rglob("out.txt"))
    assert out.read_text() == "token *** x=1\n"
    assert not [p for p in (experiment / "runs").rglob("*") if p.is_file() and b"tok-4f9a1c77e2" in p.read_bytes()]


def test_a_sweep_in_ci_mode_reports_its_trials_not_its_pool(experiment, fleet_home, tmp_path):
    """The job summary and step outputs of a sweep in CI: its verdict and every trial with its
    parameters, metrics and state. They were the internal pool run's ("fleet run r-… (pool)", its
    directory as outputs-dir, "No metrics.json came back" of trials that had written them)."""
    (experiment / "fleet.toml").write_text('project = "t"\ncommand = "true"\ntemplate = "local-1gpu"\n'
                                           'max_duration = "10m"\n')
    script = ('mkdir -p "$FLEET_OUTPUT_DIR"; echo \'{{"acc": 0.{x}}}\' > "$FLEET_OUTPUT_DIR/metrics.json"; '
              '[ {x} != 2 ]')
    step_summary, step_outputs = tmp_path / "summary.md", tmp_path / "outputs"
    proc = run_fleet(["sweep", "--allow-dirty", "--param", "x=1,2", "--", "sh", "-c", script], cwd=experiment,
                     env={"CI": "true", "GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(step_summary),
                          "GITHUB_OUTPUT": str(step_outputs)})
    assert proc.returncode == 1, proc.stderr[-3000:]
    text = step_summary.read_text()
    sweep_id = re.search(r"❌ fleet sweep `(s-[0-9a-f-]+)`: completed", text).group(1)    # one trial failed
    assert "(pool)" not in text and "fleet run" not in text and "No metrics.json" not in text, text
    assert re.search(r"\| t001 \| succeeded \| 1 \| 0\.1 \| 0 \|", text), text
    assert re.search(r"\| t002 \| failed \| 2 \| 0\.2 \| 1 \|", text), text
    outputs = step_outputs.read_text()
    assert f"sweep-id={sweep_id}\n" in outputs and "status=completed\nexit-status=1\n" in outputs, outputs
    assert f"outputs-dir={experiment / 'runs' / sweep_id}\n" in outputs, outputs
    assert (experiment / "runs" / sweep_id / "ci-summary.md").read_text() == text


def test_a_sweep_whose_job_summary_cannot_be_written_keeps_its_own_result(experiment, fleet_home, tmp_path):
    """fleet up warns and keeps its exit code when the job summary cannot be written; the sweep's
    report ended the command in an internal error instead, its trials' verdict lost."""
    (experiment / "fleet.toml").write_text('project = "t"\ncommand = "true"\ntemplate = "local-1gpu"\n'
                                           'max_duration = "10m"\n')
    proc = run_fleet(["sweep", "--allow-dirty", "--param", "x=1", "--", "true"], cwd=experiment,
                     env={"CI": "true", "GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "could not write the CI summary: IsADirectoryError" in proc.stderr + proc.stdout, proc.stderr[-3000:]
    assert "internal error" not in proc.stderr + proc.stdout


def test_a_secret_in_a_trials_metric_name_is_masked_in_the_job_summary(experiment, fleet_home, tmp_path):
    """The summary is masked after it is rendered, and rendering escapes `&`, `<`, `|`: a secret
    holding one reached the job summary whole when a trial wrote it into a metric's name."""
    (experiment / "fleet.toml").write_text('project = "t"\ncommand = "true"\ntemplate = "local-1gpu"\n'
                                           'max_duration = "10m"\nsecrets = ["MY_TOKEN"]\n')
    script = ('mkdir -p "$FLEET_OUTPUT_DIR"; printf \'{"acc %s": 0.{x}}\' "$MY_TOKEN" '
              '> "$FLEET_OUTPUT_DIR/metrics.json"')
    step_summary = tmp_path / "summary.md"
    proc = run_fleet(["sweep", "--allow-dirty", "--param", "x=1", "--", "sh", "-c", script], cwd=experiment,
                     env={"CI": "true", "GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(step_summary),
                          "MY_TOKEN": "tok&4f9a<1c77e2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = step_summary.read_text()
    assert "4f9a" not in text and "| acc *** |" in text, text
