"""What a trial leaves in the pool's venv on a warm machine: the environment every later trial's record
carries is the pool's, probed after setup, and the probe trusts each package's RECORD hashes without
reading the files. A trial that patched a library in place (red-team finding) handed the patch to every
later trial there, whose records showed the pinned environment. The reset reads the stat of every
file under the venv's site-packages and retires the machine when it differs from setup's."""
from __future__ import annotations

import json
import re

import pytest

from tests.conftest import processes_under, run_fleet
from tests.fixtures.wheels import write_wheel

# Trial 1 patches the installed tinypkg in place (no pip: RECORD and METADATA unchanged).
SCRIPT = ("import pathlib, tinypkg; x = '{x}'\n"
          "print('ran=%s:%s' % (x, tinypkg.VERSION))\n"
          "if x == '1': pathlib.Path(tinypkg.__file__).write_text(\"VERSION = 'PATCHED'\\n\")\n")


@pytest.fixture
def venv_experiment(experiment, tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    write_wheel(wheels, "tinypkg", "1.0")
    (experiment / "requirements.txt").write_text("tinypkg==1.0\n")
    (experiment / "fleet.toml").write_text(
        'project = "t"\ncommand = "true"\ntemplate = "local-1gpu"\nmax_duration = "10m"\n'
        f'setup = "pip install -q --no-index --find-links {wheels} -r requirements.txt"\n')
    return experiment


def test_a_trial_that_patches_a_library_in_the_venv_gets_no_later_trial_on_that_machine(venv_experiment, fleet_home):
    proc = run_fleet(["sweep", "--param", "x=1,2,3", "--json", "--", "python", "-c", SCRIPT], cwd=venv_experiment,
                     timeout=180)
    trials = json.loads(proc.stdout)["trials"]
    assert trials[0]["state"] == "succeeded", proc.stderr[-3000:]
    assert "ran=1:1.0" in proc.stderr, proc.stderr[-3000:]
    assert re.search(r"machine \S+: r-\S+ changed files in the venv's site-packages there: no more trials on it",
                     proc.stderr), proc.stderr[-3000:]
    assert not re.search(r"ran=[23]:", proc.stderr)            # no later trial ran the patched library
    assert [t["state"] for t in trials[1:]] == ["not-started", "not-started"], trials
    assert all("retired: machines " in t["reason"] and f"site-packages changed by {trials[0]['run_id']}"
               in t["reason"] for t in trials[1:]), trials
    assert processes_under(fleet_home) == []


def test_trials_that_leave_the_venv_alone_all_run_on_the_warm_machine(venv_experiment, fleet_home):
    proc = run_fleet(["sweep", "--param", "x=2,3", "--json", "--", "python", "-c", SCRIPT], cwd=venv_experiment,
                     timeout=180)
    trials = json.loads(proc.stdout)["trials"]
    assert [t["state"] for t in trials] == ["succeeded", "succeeded"], proc.stderr[-3000:]
    assert trials[0]["machines"] == trials[1]["machines"]     # the import's __pycache__ is not a change
    assert "site-packages" not in proc.stderr


def test_a_library_installed_without_byte_code_is_not_changed_by_the_trial_that_imports_it(
        venv_experiment, fleet_home):
    """`uv pip install` (and pip's --no-compile) write no __pycache__: the first trial's import makes
    tinypkg/__pycache__, which is Python's doing, not a patch; the machine stays for the next trials."""
    text = (venv_experiment / "fleet.toml").read_text().replace("pip install -q", "pip install -q --no-compile")
    (venv_experiment / "fleet.toml").write_text(text)
    proc = run_fleet(["sweep", "--param", "x=2,3", "--json", "--", "python", "-c", SCRIPT], cwd=venv_experiment,
                     timeout=180)
    trials = json.loads(proc.stdout)["trials"]
    assert [t["state"] for t in trials] == ["succeeded", "succeeded"], proc.stderr[-3000:]
    assert trials[0]["machines"] == trials[1]["machines"]
    assert "site-packages" not in proc.stderr, proc.stderr[-3000:]
    assert processes_under(fleet_home) == []
