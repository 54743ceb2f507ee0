"""`fleet up --detach --env NAME=VALUE`: the value reaches the experiment, and a secret one is never
written under FLEET_HOME. The launcher handed the supervisor its overrides in
supervisors/<run>/spec.json, [env] values included, where the file stayed after the run: a token
given with --env was on disk in clear, unlike anywhere else fleet stores the run."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess

from tests.conftest import FLEET, processes_under, run_fleet, wait_until

CANARY = "canary-detach-5d21e0"
DIGEST = hashlib.sha256(CANARY.encode()).hexdigest()[:16]   # the command checks it without naming it


def _files_holding(root, needle: str) -> list[str]:
    """Files fleet keeps under FLEET_HOME (machines/ is the local machines' own disk: the experiment
    wrote the value there itself)."""
    hits = []
    for dirpath, dirs, files in os.walk(root):
        if dirpath == str(root) and "machines" in dirs:
            dirs.remove("machines")
        for name in files:
            path = os.path.join(dirpath, name)
            try:
                with open(path, "rb") as fh:
                    if needle.encode() in fh.read():
                        hits.append(path)
            except OSError:
                continue
    return hits


def _supervisor_ended(home) -> bool:
    """`fleet attach` returns once the run is recorded; its supervisor exits just after (this
    fixture's teardown refuses any process left under FLEET_HOME)."""
    return wait_until(lambda: not any("fleet.run.supervisor" in p for p in processes_under(home)), 30)


def test_a_secret_given_with_env_to_a_detached_run_is_not_stored(experiment, fleet_home):
    proc = subprocess.run([FLEET, "up", "-d", "--json", "--env", f"MY_API_TOKEN={CANARY}", "--", "sh", "-c",
                           f'mkdir -p "$FLEET_OUTPUT_DIR"; test "$(printf %s "$MY_API_TOKEN" | sha256sum | cut -c1-16)" = {DIGEST} '
                           '&& echo arrived > "$FLEET_OUTPUT_DIR/seen"; '
                           "sleep 2"], cwd=experiment, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    handoff = json.loads(proc.stdout)
    run_id = handoff["run_id"]
    try:
        assert _files_holding(fleet_home, CANARY) == []            # while it runs
    finally:
        attach = run_fleet(["attach", run_id], cwd=experiment, timeout=120)
    assert attach.returncode == 0, attach.stderr
    assert (experiment / "runs" / run_id / "node-0" / "seen").read_text() == "arrived\n"   # it arrived
    assert wait_until(lambda: _files_holding(fleet_home, CANARY) == [], 10), _files_holding(fleet_home, CANARY)
    assert _supervisor_ended(fleet_home)


def test_a_secret_the_shell_expanded_into_a_detached_command_is_not_left_on_disk(experiment, fleet_home):
    with open(experiment / "fleet.toml", "a") as f:
        f.write('secrets = ["MY_TOKEN"]\n')
    proc = subprocess.run([FLEET, "up", "-d", "--json", "--", "sh", "-c", f"echo {CANARY} >/dev/null; sleep 1"],
                          cwd=experiment, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MY_TOKEN": CANARY})
    assert proc.returncode == 0, proc.stderr
    run_id = json.loads(proc.stdout)["run_id"]
    attach = run_fleet(["attach", run_id], cwd=experiment, timeout=120, env={"MY_TOKEN": CANARY})
    assert attach.returncode == 0, attach.stderr
    assert wait_until(lambda: _files_holding(fleet_home, CANARY) == [], 10), _files_holding(fleet_home, CANARY)
    assert _supervisor_ended(fleet_home)
