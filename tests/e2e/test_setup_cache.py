"""The setup cache on the local provider (real sshd machines, one FLEET_HOME, so one warm host): a
second `fleet up` whose install-only setup would install nothing skips it and says so; a changed
requirements.txt or `--no-setup-cache` runs it; a setup that does anything besides installing
always runs."""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import processes_under, run_fleet
from tests.fixtures.wheels import write_wheel

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x", "PATH": "/usr/bin:/bin"}
SKIPPED = "setup: skipped, this venv was built by the same setup from the same files (set "
COMMAND = "command = \"python -c 'import tinypkg; print(\\\"tinypkg\\\", tinypkg.VERSION)'\"\n"


def _commit(exp, message: str) -> None:
    for args in (["add", "."], ["commit", "-qm", message]):
        subprocess.run(["git", *args], cwd=exp, check=True, capture_output=True, env={**GIT_ENV, "HOME": str(exp)})


@pytest.fixture
def experiment(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    write_wheel(wheels, "tinypkg", "1.0")
    write_wheel(wheels, "tinypkg", "2.0")
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "fleet.toml").write_text(
        'project = "t"\n' + COMMAND + f'setup = "pip install -q --no-index --find-links {wheels} -r requirements.txt"\n'
        'template = "local-1gpu"\nmax_duration = "5m"\n')
    (exp / "requirements.txt").write_text("tinypkg==1.0\n")
    (exp / ".gitignore").write_text("runs/\n")
    subprocess.run(["git", "init", "-q"], cwd=exp, check=True, capture_output=True)
    _commit(exp, "exp")
    return exp


def _up(exp, *flags: str) -> str:
    done = run_fleet(["up", "--ci", "--json", *flags], cwd=exp, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["status"] == "succeeded"
    return done.stderr


def test_a_warm_venv_skips_the_same_install_only_setup_and_a_changed_file_runs_it(fleet_home, experiment):
    exp = experiment
    first = _up(exp)
    assert SKIPPED not in first and "[0] tinypkg 1.0" in first
    second = _up(exp)
    assert SKIPPED in second and "[0] tinypkg 1.0" in second, second[-3000:]   # the package is there
    assert "setup:0" not in second                                   # and no setup process ran
    forced = _up(exp, "--no-setup-cache")
    assert SKIPPED not in forced and "[0] tinypkg 1.0" in forced

    (exp / "requirements.txt").write_text("tinypkg==2.0\n")          # another package set
    _commit(exp, "tinypkg 2")
    changed = _up(exp)
    assert SKIPPED not in changed and "[0] tinypkg 2.0" in changed, changed[-3000:]
    assert SKIPPED in _up(exp)                                       # and that one is warm next time
    assert processes_under(fleet_home) == []


def test_a_setup_that_does_more_than_install_always_runs(fleet_home, experiment):
    exp = experiment
    text = (exp / "fleet.toml").read_text().replace("-r requirements.txt", "-r requirements.txt && echo setup-ran")
    (exp / "fleet.toml").write_text(text)
    _commit(exp, "setup echoes")
    for _ in range(2):
        err = _up(exp)
        assert SKIPPED not in err and "setup-ran" in err and "[0] tinypkg 1.0" in err, err[-3000:]


def test_setup_always_in_fleet_toml_runs_it_on_a_warm_host(fleet_home, experiment):
    exp = experiment
    _up(exp)
    text = (exp / "fleet.toml").read_text()
    setup_line = next(line for line in text.splitlines() if line.startswith("setup = "))
    text = text.replace(setup_line + "\n", "") + "[setup]\ncommand = " + setup_line.split(" = ", 1)[1] + "\nalways = true\n"
    (exp / "fleet.toml").write_text(text)
    _commit(exp, "always")
    err = _up(exp)
    assert SKIPPED not in err and "[0] tinypkg 1.0" in err, err[-3000:]
