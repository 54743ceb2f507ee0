"""Byte code on a warm pool (fleet/sweep/bytecode.py): Python loads a module's __pycache__/*.pyc
instead of its source when the header matches the source's mtime and size, and the reset's check
skipped every __pycache__. A trial that planted a forged .pyc in the venv's site-packages, or in the
staged code that each later trial's copy is made from, ran its code in every later trial on that
machine. Now the pool compiles the byte code before the first trial, trials write none, and the
reset reads __pycache__ like any entry: the machine that was written to runs no later trial."""
from __future__ import annotations

import json
import re

import pytest

from tests.conftest import processes_under, run_fleet
from tests.fixtures.wheels import write_wheel

# Each trial prints what it imported; trial 1 writes byte code in the way its argument names.
TRIAL = r'''
import importlib.util, marshal, os, py_compile, struct, sys
import helper, tinypkg
x, how = sys.argv[1], sys.argv[2]
print("ran=%s:%s:%s" % (x, tinypkg.VERSION, helper.VALUE))


def forge(source, text):
    """A .pyc whose header matches `source` (mtime, size), so Python loads it instead."""
    st = os.stat(source)
    pyc = importlib.util.cache_from_source(source)
    os.makedirs(os.path.dirname(pyc), exist_ok=True)
    with open(pyc, "wb") as fh:
        fh.write(importlib.util.MAGIC_NUMBER + struct.pack("<III", 0, int(st.st_mtime) & 0xFFFFFFFF, st.st_size)
                 + marshal.dumps(compile(text, source, "exec")))


if x == "1" and how == "site":
    forge(tinypkg.__file__, "VERSION = 'PLANTED'\n")
elif x == "1" and how == "code":
    forge(os.path.join(os.environ["FLEET_MACHINE_ROOT"], "work", "helper.py"), "VALUE = 'PLANTED'\n")
elif x == "1" and how == "compile":
    py_compile.compile(tinypkg.__file__)      # real byte code, but no import writes any: a change
'''


@pytest.fixture
def pyc_experiment(experiment, tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    write_wheel(wheels, "tinypkg", "1.0")
    write_wheel(wheels, "toplvl", "1.0", module=True)
    (experiment / "requirements.txt").write_text("tinypkg==1.0\ntoplvl==1.0\n")
    (experiment / "trial.py").write_text(TRIAL)
    (experiment / "helper.py").write_text("VALUE = 'orig'\n")
    (experiment / "fleet.toml").write_text(
        'project = "t"\ncommand = "true"\ntemplate = "local-1gpu"\nmax_duration = "10m"\n'
        f'setup = "pip install -q --no-index --find-links {wheels} -r requirements.txt"\n')
    return experiment


@pytest.mark.parametrize("how, changed", [
    ("site", r"changed files in the venv's site-packages there: no more trials on it"),
    ("code", r"changed the staged code or data there: no more trials on it"),
    ("compile", r"changed files in the venv's site-packages there: no more trials on it"),
])
def test_a_trial_that_writes_byte_code_gets_no_later_trial_on_that_machine(pyc_experiment, fleet_home, how, changed):
    proc = run_fleet(["sweep", "--param", "x=1,2,3", "--json", "--", "python", "trial.py", "{x}", how],
                     cwd=pyc_experiment, timeout=180)
    trials = json.loads(proc.stdout)["trials"]
    assert trials[0]["state"] == "succeeded", proc.stderr[-3000:]
    assert "ran=1:1.0:orig" in proc.stderr, proc.stderr[-3000:]
    assert re.search(rf"machine \S+: {trials[0]['run_id']} {changed}", proc.stderr), proc.stderr[-3000:]
    assert not re.search(r"ran=[23]:", proc.stderr), proc.stderr[-3000:]   # no later trial ran, planted or not
    assert "PLANTED" not in proc.stderr
    assert [t["state"] for t in trials[1:]] == ["not-started", "not-started"], trials
    assert all("retired: machines " in t["reason"] and trials[0]["run_id"] in t["reason"] for t in trials[1:]), trials
    assert processes_under(fleet_home) == []


def test_first_imports_of_uncompiled_libraries_neither_retire_the_machine_nor_make_a_trial_probe_again(
        pyc_experiment, fleet_home):
    """`pip --no-compile` (and uv) install no byte code. A trial's first import of a top-level module
    used to make site-packages/__pycache__, which changed site-packages' times: the next trial probed
    the environment again. Now it was compiled before the first trial and no trial writes any."""
    text = (pyc_experiment / "fleet.toml").read_text().replace("pip install -q", "pip install -q --no-compile")
    (pyc_experiment / "fleet.toml").write_text(text)
    command = "import sys, toplvl, tinypkg; print('ran=%s:%d' % (sys.argv[1], sys.flags.dont_write_bytecode))"
    proc = run_fleet(["sweep", "--param", "x=1,2,3", "--json", "--", "python", "-c", command, "{x}"],
                     cwd=pyc_experiment, timeout=180)
    summary = json.loads(proc.stdout)
    trials = summary["trials"]
    assert [t["state"] for t in trials] == ["succeeded"] * 3, proc.stderr[-3000:]
    assert len({tuple(t["machines"]) for t in trials}) == 1
    assert "site-packages" not in proc.stderr and "no more trials" not in proc.stderr, proc.stderr[-3000:]
    assert all(f"ran={x}:1" in proc.stderr for x in "123"), proc.stderr[-3000:]   # PYTHONDONTWRITEBYTECODE=1
    for t in trials:   # each record reused the pool's environment: no probe of its own
        record = run_fleet(["runs", "show", t["run_id"], "--json"], cwd=pyc_experiment)
        assert json.loads(record.stdout)["environment"]["capture_s"] == 0.0, (t["trial"], proc.stderr[-3000:])
    assert processes_under(fleet_home) == []
