"""`fleet up` on a terminal shows the plan and asks before leasing; `-y`, CI and --json never ask;
declining leases and records nothing. Runs fleet on a real pseudo-terminal."""
from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time

import pytest

from tests.conftest import FLEET, run_fleet

pytestmark = pytest.mark.timeout(180)


def _on_a_terminal(args: list[str], cwd, answer: str | None, env: dict | None = None, timeout: float = 120):
    """Run fleet with stdin/stdout/stderr on a pty; type `answer` once the question appears.
    Returns (exit code, everything fleet wrote)."""
    main, child = pty.openpty()
    full_env = {k: v for k, v in os.environ.items() if k not in ("CI", "GITHUB_ACTIONS", "GITLAB_CI")}
    full_env.update(env or {}, COLUMNS="120")
    proc = subprocess.Popen([FLEET, *args], cwd=cwd, stdin=child, stdout=child, stderr=child, env=full_env,
                            start_new_session=True)
    os.close(child)
    seen, answered, end = b"", False, time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            ready, _, _ = select.select([main], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(main, 65536)
                except OSError:
                    chunk = b""
                if not chunk and proc.poll() is not None:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
            if answer is not None and not answered and b"Lease these machines? [y/N]" in seen:
                os.write(main, answer.encode() + b"\n")
                answered = True
        return proc.wait(timeout=60), seen.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main)


@pytest.fixture
def exp(tmp_path, fleet_home):
    d = tmp_path / "exp"
    d.mkdir()
    (d / "fleet.toml").write_text('project = "prompt"\nmax_duration = "10m"\ncommand = "echo ran-on-$FLEET_NODE_RANK"\n')
    return d


def test_declining_the_plan_leases_nothing(exp):
    code, out = _on_a_terminal(["up", "--gpus", "A10G:8", "--budget", "1"], exp, "n")
    assert code == 130, out
    # With a type and no template, the cheapest template that has it: eight one-GPU machines.
    assert "machines   8 × local-1gpu" in out and "8 × A10G 24GB (simulated) (asked: A10G:8)" in out
    assert "would cost $8.05 per hour" in out, out
    assert "at most    $1.34 = 10m max_duration" in out and "costs at most $1.00" in out, out
    assert "not started: the plan was declined; nothing was leased or spent" in out
    assert "ran-on-" not in out and not (exp / "runs").exists()
    status = json.loads(run_fleet(["status", "--json"], cwd=exp).stdout)
    assert status["leases"] == []


def test_yes_runs_and_y_flag_or_ci_never_ask(exp):
    code, out = _on_a_terminal(["up", "--gpus", "4"], exp, "y")
    assert code == 0 and "Lease these machines?" in out and "ran-on-0" in out, out
    code, out = _on_a_terminal(["up", "--gpus", "4", "-y"], exp, None)
    assert code == 0 and "Lease these machines?" not in out and "ran-on-0" in out, out
    code, out = _on_a_terminal(["up", "--gpus", "4"], exp, None, env={"CI": "true"})
    assert code == 0 and "Lease these machines?" not in out and "ran-on-0" in out, out


def test_dry_run_prints_the_plan_and_leases_nothing(exp):
    proc = run_fleet(["up", "--gpus", "8", "--dry-run"], cwd=exp)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("fleet up --dry-run: nothing was leased\nmachines   2 × local-4gpu\n")
    assert "at most    $1.89 = 10m max_duration × $11.34/h (simulated: nothing is billed)" in proc.stdout
    assert not (exp / "runs").exists()


def test_dry_run_prices_a_directory_without_fleet_toml(tmp_path, fleet_home):
    proc = run_fleet(["up", "--gpus", "A10G:4", "--template", "local-4gpu", "--dry-run", "--json"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["plan"]["machines"] == 1
    assert run_fleet(["up", "--gpus", "4"], cwd=tmp_path).returncode == 2     # a real run still needs a command
