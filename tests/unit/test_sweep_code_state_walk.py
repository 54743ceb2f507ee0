"""code_state (fleet/sweep/trial_env.py) walks the staged code and data lazily, so a venv inside the
code and __pycache__ are skipped (a list of every walk first lost the pruning: a rewritten .pyc
retired a machine), and gives up (None: unread, never "changed") past its time budget."""
from __future__ import annotations

from fleet.sweep.trial_env import ENV_STATE


def _code_state():
    scope: dict = {}
    exec(ENV_STATE, scope)        # the snippet the machine runs, as it runs it
    return scope["code_state"]


def test_pycache_and_a_venv_inside_the_code_are_not_its_state(tmp_path):
    code_state = _code_state()
    code, data = tmp_path / "work", tmp_path / "data"
    (code / "pkg" / "__pycache__").mkdir(parents=True)
    (code / ".venv" / "lib").mkdir(parents=True)
    (code / ".venv" / "pyvenv.cfg").write_text("home = /usr\n")
    (code / "train.py").write_text("print(1)\n")
    (data / "train").mkdir(parents=True)
    (data / "train" / "x.txt").write_text("x\n")
    before = code_state(str(code), str(data))
    (code / "pkg" / "__pycache__" / "m.pyc").write_bytes(b"\0")
    (code / ".venv" / "lib" / "site.py").write_text("# installed\n")
    assert code_state(str(code), str(data)) == before
    (data / "train" / "x.txt").write_text("poison\n")
    assert code_state(str(code), str(data)) != before


def test_past_its_time_budget_the_state_is_unread_not_changed(tmp_path):
    code_state = _code_state()
    for i in range(3):
        (tmp_path / f"d{i}").mkdir()
    assert code_state(str(tmp_path), "", budget_s=-1) is None


def test_a_package_s_first_import_making_its_pycache_is_not_a_change(tmp_path):
    """uv (and `pip install --no-compile`) install no byte code: the first trial's import makes
    lib1/__pycache__, which changed lib1's times and retired the machine after every first trial."""
    scope: dict = {}
    exec(ENV_STATE, scope)
    site_state = scope["site_state"]
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    (site / "lib1").mkdir(parents=True)
    (site / "lib1" / "__init__.py").write_text("X = 1\n")
    before = site_state(str(tmp_path / "venv"))
    (site / "lib1" / "__pycache__").mkdir()
    (site / "lib1" / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"\0")
    assert site_state(str(tmp_path / "venv")) == before
    (site / "lib1" / "evil.pth").write_text("import os\n")          # what a trial adds still shows
    assert site_state(str(tmp_path / "venv")) != before
