"""The pool's byte code pass (fleet/sweep/bytecode.py), run here as the machine runs it: it compiles
what has no current .pyc, leaves what has one alone (a rewritten .pyc would be a change the resets
see), skips a file that does not compile, and its time limit ends it whole."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from types import SimpleNamespace

from fleet.sweep import bytecode
from tests.fixtures.deep_tree import DEPTH, deep_tree, remove


def _compile(*tops, limit_s: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", bytecode._LIMITED, "precompile", str(limit_s), sys.executable, "-S", "-c",
                           bytecode._COMPILE, *map(str, tops)], capture_output=True, text=True, timeout=120)


def test_sources_get_byte_code_that_a_second_pass_leaves_alone(tmp_path):
    site, code = tmp_path / "venv" / "lib" / "python3" / "site-packages", tmp_path / "work"
    (site / "lib1").mkdir(parents=True)
    code.mkdir()
    (site / "lib1" / "__init__.py").write_text("X = 1\n")
    (site / "top.py").write_text("Y = 2\n")
    (code / "helper.py").write_text("Z = 3\n")
    (code / "py2_data.py").write_text("print 'not python 3'\n")
    first = _compile(tmp_path / "venv", code, tmp_path / "missing")
    assert first.returncode == 0 and first.stdout == first.stderr == "", first
    pycs = [importlib.util.cache_from_source(str(p)) for p in
            (site / "lib1" / "__init__.py", site / "top.py", code / "helper.py")]
    stats = [(os.stat(p).st_ino, os.stat(p).st_mtime_ns) for p in pycs]
    assert not os.path.exists(importlib.util.cache_from_source(str(code / "py2_data.py")))
    assert _compile(tmp_path / "venv", code).returncode == 0
    assert [(os.stat(p).st_ino, os.stat(p).st_mtime_ns) for p in pycs] == stats


def test_a_pass_past_its_limit_is_said_in_one_line(monkeypatch):
    class Session:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def run(self, argv, **kw):
            return SimpleNamespace(exit_code=124, stdout="", stderr="")
    monkeypatch.setattr("fleet.remote.ssh.connect", lambda machine, timeout: Session())
    monkeypatch.setattr("fleet.sweep.trial_env.env_paths", lambda lease, m: ("/w/pyenv", "/w/work", "/w/data"))
    warned: list[str] = []
    ctx = SimpleNamespace(events=SimpleNamespace(phase=lambda *a: None, warn=warned.append))
    lease = SimpleNamespace(machines=[SimpleNamespace(id="m-0", python="python3")])
    bytecode.precompile_all(ctx, lease)
    assert warned == [f"machine m-0: could not compile the byte code before the first trial (it took over "
                      f"{bytecode.LIMIT_S}s); trials there compile what they import each time"]


def test_code_holding_a_tree_deeper_than_the_stack_is_compiled(tmp_path):
    """The user's code with a `cp -r . sub/` run in a loop in it: os.walk recursed once per level
    before Python 3.12, so the pass died on RecursionError and the pool warned that it could not
    compile the byte code, every trial compiling what it imports."""
    code = tmp_path / "work"
    deep_tree(code / "sub")
    try:
        (code / "helper.py").write_text("Z = 3\n")
        bottom = code.joinpath(*["sub"] + ["d"] * DEPTH)
        (bottom / "deep.py").write_text("W = 4\n")
        got = _compile(code)
        assert got.returncode == 0 and got.stdout == got.stderr == "", got
        for source in (code / "helper.py", bottom / "deep.py"):
            assert os.path.exists(importlib.util.cache_from_source(str(source)))
    finally:
        remove(code)
