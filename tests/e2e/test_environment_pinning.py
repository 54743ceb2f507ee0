"""The environment end to end on the local provider (real sshd machines): a run records the exact
package its setup installed from a local wheel directory; a newer wheel makes a second run differ in
that package and nothing else (`fleet runs diff`); `fleet rerun` of the first run installs the old
version from the store with the wheel directory gone; a secret never reaches the record."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.conftest import run_fleet
from tests.fixtures.wheels import write_wheel

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x", "PATH": "/usr/bin:/bin"}
SECRET = "s3cr3t-value-8842"


@pytest.fixture
def experiment(tmp_path, monkeypatch):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "fleet.toml").write_text(
        'project = "t"\n'
        "command = \"python -c 'import tinypkg; print(\\\"tinypkg\\\", tinypkg.VERSION)'\"\n"
        f'setup = "pip install -U --no-index --find-links {wheels} tinypkg"\n'
        'template = "local-1gpu"\nmax_duration = "5m"\nsecrets = ["API_TOKEN"]\n')
    (exp / ".gitignore").write_text("runs/\n")
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "exp"]):
        subprocess.run(["git", *args], cwd=exp, check=True, capture_output=True, env={**GIT_ENV, "HOME": str(exp)})
    monkeypatch.setenv("API_TOKEN", SECRET)
    return exp, wheels


def _up(exp, *args):
    done = run_fleet([*args, "--ci", "--json"], cwd=exp, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert SECRET not in done.stdout + done.stderr
    return json.loads(done.stdout), done.stderr


def _record(exp, run_id):
    shown = run_fleet(["runs", "show", run_id, "--json"], cwd=exp)
    assert shown.returncode == 0, shown.stderr
    assert SECRET not in shown.stdout
    return json.loads(shown.stdout)


@pytest.mark.slow
def test_record_diff_and_pinned_rerun(fleet_home, experiment):
    exp, wheels = experiment
    hash_1 = write_wheel(wheels, "tinypkg", "1.0")
    first, err = _up(exp, "up")
    assert "[0] tinypkg 1.0" in err
    env = _record(exp, first["run_id"])["environment"]
    (machine,) = env["machines"]
    assert machine["packages"] == [{"name": "tinypkg", "version": "1.0", "sha256": hash_1}]
    # The local provider's GPUs are slots: simulated, with no driver and no CUDA.
    assert machine["gpu"] == {"model": "simulated", "count": 1, "driver": "none", "cuda": "none", "simulated": True}
    assert machine["provider"] == "local" and machine["image"]["kind"] == "host-os"
    assert machine["python"].startswith("CPython 3.") and env["wheels_snapshot"]
    # The host keeps the set by its hash too (a rerun of any run with this set starts from it here).
    assert len(list((fleet_home / "cache" / "pyenv").glob("set-*"))) == 1
    shown = run_fleet(["runs", "show", first["run_id"]], cwd=exp).stdout
    assert "1 × simulated, driver none" in shown and "1 packages" in shown

    # A newer wheel appears: the same code, data and parameters now get tinypkg 2.0.
    (wheels / "tinypkg-1.0-py3-none-any.whl").unlink()
    hash_2 = write_wheel(wheels, "tinypkg", "2.0")
    second, err = _up(exp, "up")
    assert "[0] tinypkg 2.0" in err
    diff = run_fleet(["runs", "diff", first["run_id"], second["run_id"], "--json"], cwd=exp)
    assert diff.returncode == 0, diff.stderr
    got = json.loads(diff.stdout)
    assert got["differences"] == {
        "code": [], "data": [], "parameters": [],
        "environment": [{"area": "package", "item": "tinypkg", "kind": "changed",
                         "before": f"1.0 (sha256 {hash_1[:12]})", "after": f"2.0 (sha256 {hash_2[:12]})"}]}
    md = run_fleet(["runs", "diff", first["run_id"], second["run_id"], "--md"], cwd=exp)
    assert "| package tinypkg | changed |" in md.stdout and "## Code\n\n- same" in md.stdout

    # The wheel directory is gone, and so is the host's environment cache (which still has 1.0): the
    # rerun can only get 1.0 from the store's copy of the recorded wheels, offline.
    shutil.rmtree(wheels)
    shutil.rmtree(fleet_home / "cache" / "pyenv")
    again, err = _up(exp, "rerun", first["run_id"])
    assert "[0] tinypkg 1.0" in err
    assert again["environment_differences"] == []
    rerun_env = _record(exp, again["run_id"])["environment"]
    assert rerun_env["pinned_from"] == first["run_id"]
    assert rerun_env["machines"][0]["packages"] == machine["packages"]
    same = json.loads(run_fleet(["runs", "diff", first["run_id"], again["run_id"], "--json"], cwd=exp).stdout)
    assert same["identical"] is True, same

    audit = run_fleet(["audit", first["run_id"], "--md"], cwd=exp)
    assert audit.returncode == 0, audit.stderr
    assert "Environment" in audit.stdout and "tinypkg" in audit.stdout and "simulated" in audit.stdout

    # Nowhere in the chain: not in any record, nor in the state database.
    assert SECRET.encode() not in (fleet_home / "state.db").read_bytes()



def _value_experiment(tmp_path, store: str | None = None):
    """tinypkg from a local wheel directory; the setup then runs W/more.sh (nothing, at first)."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "more.sh").write_text("true\n")
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "fleet.toml").write_text(
        'project = "t"\n'
        "command = \"python -c 'import tinypkg; print(\\\"value\\\", tinypkg.VALUE)'\"\n"
        f'setup = "pip install --no-index --find-links {wheels} tinypkg && sh {wheels}/more.sh"\n'
        'template = "local-1gpu"\nmax_duration = "5m"\n' + (f'store = "{store}"\n' if store else ""))
    (exp / ".gitignore").write_text("runs/\n")
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "exp"]):
        subprocess.run(["git", *args], cwd=exp, check=True, capture_output=True, env={**GIT_ENV, "HOME": str(exp)})
    return exp, wheels


def _rebuild(wheels, value: str) -> str:
    for old in wheels.glob("*.whl"):
        old.unlink()
    return write_wheel(wheels, "tinypkg", "1.0", body=f"VALUE = {value!r}\n")


@pytest.mark.slow
def test_a_rebuilt_same_version_is_installed_over_and_a_difference_left_stops_the_rerun(fleet_home, tmp_path):
    """pip keeps an installed version it sees as satisfied: a rerun installs the recorded build over
    another build of the same version, and refuses to start the command while a package differs."""
    exp, wheels = _value_experiment(tmp_path)
    good = _rebuild(wheels, "good")
    first, err = _up(exp, "up")
    assert "[0] value good" in err

    # tinypkg 1.0 is rebuilt with other content; the host's cache now holds that build.
    changed = _rebuild(wheels, "changed-same-version")
    shutil.rmtree(fleet_home / "cache" / "pyenv")
    second, err = _up(exp, "up")
    assert "[0] value changed-same-version" in err
    assert _record(exp, second["run_id"])["environment"]["machines"][0]["packages"][-1]["sha256"] == changed != good
    again, err = _up(exp, "rerun", first["run_id"])
    assert "[0] value good" in err
    assert "installing 1 of the recorded packages again (missing, or other files): tinypkg 1.0" in err
    assert again["environment_differences"] == []

    # The setup now installs a package the recorded run did not have: the command does not start.
    extra = tmp_path / "extra"
    extra.mkdir()
    write_wheel(extra, "extrapkg", "0.1")
    (wheels / "more.sh").write_text(f"pip install --no-index --find-links {extra} extrapkg\n")
    refused = run_fleet(["rerun", first["run_id"], "--ci", "--json"], cwd=exp, timeout=240)
    assert refused.returncode == 5, refused.stderr[-3000:]
    assert (f"fleet: error: run {first['run_id']}'s packages could not be installed again: package extrapkg: added "
            "(0.1 (sha256 ") in refused.stderr
    assert "the command was not started" in refused.stderr and "--allow-package-change" in refused.stderr
    assert "[0] value" not in refused.stderr
    allowed, err = _up(exp, "rerun", first["run_id"], "--allow-package-change")
    assert "[0] value good" in err
    assert [d.split(" (")[0] for d in allowed["environment_differences"]] == ["package extrapkg: added"]


@pytest.mark.slow
def test_a_snapshot_planted_under_the_sets_name_is_neither_recorded_nor_installed(fleet_home, tmp_path):
    """Set hashes are predictable: a snapshot someone named env-<set hash> in a shared store (one
    outside this user's FLEET_HOME) is checked against the set before it is trusted, and users
    cannot give env- names."""
    from fleet.snapshots import create_snapshot, open_store
    shared = tmp_path / "team-store"
    exp, wheels = _value_experiment(tmp_path, store=str(shared))
    _rebuild(wheels, "good")
    first, err = _up(exp, "up")
    env = _record(exp, first["run_id"])["environment"]
    ref = next((shared / "refs").glob("env-*"))
    assert ref.read_text().strip() == env["wheels_snapshot"]

    evil = tmp_path / "evil"
    evil.mkdir()
    write_wheel(evil, "tinypkg", "1.0", body="VALUE = 'EVIL'\n")
    (evil / "constraints.txt").write_text("tinypkg==1.0\n")
    ref.unlink()
    planted = create_snapshot(evil, open_store(str(shared)), name=ref.name).id   # as an older fleet allowed
    second, up_err = _up(exp, "up")
    assert "[0] value good" in up_err
    shutil.rmtree(fleet_home / "cache" / "pyenv")
    again, err = _up(exp, "rerun", second["run_id"])
    assert "[0] value good" in err and "EVIL" not in err

    assert f"snapshot {ref.name} ({planted[:12]}) does not hold this package set" in up_err
    # Packed again from the run's own venv (the same bytes: the same snapshot), and named so again.
    assert _record(exp, second["run_id"])["environment"]["wheels_snapshot"] == env["wheels_snapshot"] != planted
    assert ref.read_text().strip() == env["wheels_snapshot"]
    refused = run_fleet(["snapshot", "create", str(evil), "--name", ref.name], cwd=exp)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.startswith(f"fleet: error: invalid snapshot name '{ref.name}': names starting 'env-' "
                                     "are fleet's own")
