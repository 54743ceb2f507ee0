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
