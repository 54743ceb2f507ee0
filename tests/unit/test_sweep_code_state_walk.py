"""code_state and site_state (fleet/sweep/trial_env.py) walk the staged code and data, and the venv's
site-packages, lazily, so a venv inside the code is skipped (a list of every walk first lost the
pruning), and give up (None: unread, never "changed") past their time budget. __pycache__ is read
like any entry: the pool compiled the byte code and trials write none (fleet/sweep/bytecode.py), so
a .pyc a trial planted there, which Python would load in every later trial, is a change."""
from __future__ import annotations

from fleet.sweep.trial_env import ENV_STATE
from tests.fixtures.deep_tree import DEPTH, deep_tree, remove


def _code_state():
    scope: dict = {}
    exec(ENV_STATE, scope)        # the snippet the machine runs, as it runs it
    return scope["code_state"]


def test_a_venv_inside_the_code_is_not_its_state(tmp_path):
    code_state = _code_state()
    code, data = tmp_path / "work", tmp_path / "data"
    (code / ".venv" / "lib").mkdir(parents=True)
    (code / ".venv" / "pyvenv.cfg").write_text("home = /usr\n")
    (code / "train.py").write_text("print(1)\n")
    (data / "train").mkdir(parents=True)
    (data / "train" / "x.txt").write_text("x\n")
    before = code_state(str(code), str(data))
    (code / ".venv" / "lib" / "site.py").write_text("# installed\n")
    assert code_state(str(code), str(data)) == before
    (data / "train" / "x.txt").write_text("poison\n")
    assert code_state(str(code), str(data)) != before


def test_a_pyc_planted_in_the_code_s_pycache_is_a_change(tmp_path):
    """The next trial's copy of the code carries the staged __pycache__ (cp -a keeps the sources'
    mtimes, so a forged header still matches): a planted helper.pyc ran in every later trial."""
    code_state = _code_state()
    code = tmp_path / "work"
    (code / "__pycache__").mkdir(parents=True)
    (code / "helper.py").write_text("VALUE = 1\n")
    (code / "__pycache__" / "helper.cpython-311.pyc").write_bytes(b"compiled by the pool")
    before = code_state(str(code), "")
    (code / "__pycache__" / "helper.cpython-311.pyc").write_bytes(b"planted by a trial!!")   # same size
    assert code_state(str(code), "") != before


def test_past_its_time_budget_the_state_is_unread_not_changed(tmp_path):
    code_state = _code_state()
    for i in range(3):
        (tmp_path / f"d{i}").mkdir()
    assert code_state(str(tmp_path), "", budget_s=-1) is None


def _site(tmp_path):
    scope: dict = {}
    exec(ENV_STATE, scope)
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    (site / "lib1" / "__pycache__").mkdir(parents=True)
    (site / "lib1" / "__init__.py").write_text("X = 1\n")
    (site / "lib1" / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"compiled by the pool")
    return (lambda: scope["site_state"](str(tmp_path / "venv"))), site


def test_a_pyc_planted_in_site_packages_pycache_is_a_change(tmp_path):
    state, site = _site(tmp_path)
    before = state()
    (site / "lib1" / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"planted by a trial!!")
    assert state() != before


def test_byte_code_a_trial_adds_in_site_packages_is_a_change(tmp_path):
    """A new __pycache__ (a top-level module's, beside the packages) or a new .pyc in one: a trial
    wrote byte code, which no import does any more (PYTHONDONTWRITEBYTECODE=1)."""
    state, site = _site(tmp_path)
    before = state()
    (site / "__pycache__").mkdir()
    assert state() != before
    state2, site2 = _site(tmp_path / "again")
    before = state2()
    (site2 / "lib1" / "__pycache__" / "extra.cpython-311.pyc").write_bytes(b"\0")
    assert state2() != before


def test_site_packages_read_twice_unchanged_is_the_same_state(tmp_path):
    state, site = _site(tmp_path)
    assert state() == state() is not None


def test_numba_s_cache_beside_a_library_s_byte_code_is_no_change(tmp_path):
    """numba's cache=True (librosa, umap, pynndescent) writes <module>.<func>-N.py311.nbi/.nbc into
    the library's __pycache__ on the function's first call, PYTHONDONTWRITEBYTECODE or not: the
    first trial that called one retired its machine as having changed the venv."""
    state, site = _site(tmp_path)
    before = state()
    (site / "lib1" / "__pycache__" / "__init__._localmax-12.py311.nbi").write_bytes(b"index")
    (site / "lib1" / "__pycache__" / "__init__._localmax-12.py311.1.nbc").write_bytes(b"machine code")
    assert state() == before


def test_a_tree_deeper_than_the_stack_is_read_and_its_change_seen(tmp_path):
    """A trial's `cp -r . sub/` in a loop in the code (or fleet's agent) directory: os.walk recursed
    once per level before Python 3.12, so the reset's snippet died on RecursionError and the
    machine was taken for not clean."""
    scope: dict = {}
    exec(ENV_STATE, scope)
    code = tmp_path / "work"
    deep_tree(code / "sub")
    try:
        before = scope["code_state"](str(code), "")
        agent = scope["agent_state"](str(code))
        assert before is not None and agent is not None
        bottom = code.joinpath(*["sub"] + ["d"] * DEPTH)
        (bottom / "left-by-the-job").write_text("y")
        (bottom / "planted.py").write_text("y")
        assert scope["code_state"](str(code), "") != before
        assert scope["agent_state"](str(code)) != agent
    finally:
        remove(code)
