"""Every scripts/bench/*.py follows the convention of scripts/bench/_common.py: `--json` prints only
a JSON list of {figure, value, unit, target, met} on stdout, an informative row (no target) has
met null, and no script hard-codes a met: true."""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "scripts" / "bench"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if not p.name.startswith("_"))
# Scripts whose owners have not adopted --quick yet (strict: once one does, this entry must go).
NO_QUICK_YET: set[str] = set()
# Quick modes that start real local machines (sshd), a Slurm cluster or long runs: minutes on a loaded machine.
SLOW_QUICK = {"budget.py", "ci_cancel.py", "down.py", "environment.py", "outputs.py", "recovery.py", "sync.py", "up_local.py",
              "slurm.py"}


def load_common():
    spec = importlib.util.spec_from_file_location("bench_common", BENCH / "_common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _help(script: Path) -> str:
    proc = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_every_benchmark_is_found():
    assert {"cli_startup.py", "up_local.py", "budget.py", "aws_api_calls.py", "status_scale.py"} <= \
        {p.name for p in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_no_script_hard_codes_met_true(script):
    """met is computed from a value and a target; a literal True flatters whatever was measured."""
    tree = ast.parse(script.read_text(), filename=str(script))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "met" and isinstance(value, ast.Constant) \
                        and value.value is True:
                    bad.append(node.lineno)
        if isinstance(node, ast.keyword) and node.arg == "met" and isinstance(node.value, ast.Constant) \
                and node.value.value is True:
            bad.append(node.value.lineno)
    assert not bad, f"{script.name}: met hard-coded True at line(s) {bad}"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_script_takes_json_and_quick(script):
    text = _help(script)
    conforms = "--json" in text and "--quick" in text
    if script.name in NO_QUICK_YET:
        assert not conforms, f"{script.name} takes --quick now: remove it from NO_QUICK_YET"
        pytest.xfail("owner has not adopted scripts/bench/_common.py's --quick yet")
    assert conforms


def _check_rows(rows) -> None:
    assert isinstance(rows, list) and rows
    for r in rows:
        assert {"figure", "value", "unit", "target", "met"} <= set(r), r
        assert isinstance(r["figure"], str) and r["figure"]
        assert r["value"] is None or isinstance(r["value"], (int, float)), r
        assert r["met"] in (None, True, False), r
        if r["target"] is None:
            # informative: never met (a failed measurement is met false)
            assert r["met"] is None or (r["met"] is False and r["value"] is None), r
        else:
            assert isinstance(r["met"], bool), r
        if r["value"] is None:
            assert r["met"] is False, r


QUICK = [pytest.param(p, id=p.name, marks=[pytest.mark.slow] if p.name in SLOW_QUICK else [])
         for p in SCRIPTS if p.name not in NO_QUICK_YET]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("script", QUICK)
def test_quick_json_prints_only_the_figures(script, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env["FLEET_HOME"] = str(tmp_path / "home")
    proc = subprocess.run([sys.executable, str(script), "--quick", "--json"], capture_output=True, text=True,
                          timeout=850, env=env, cwd=tmp_path)
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.returncode in (0, 1), proc.stderr[-2000:]       # 1: a target missed or a figure failed
    rows = json.loads(proc.stdout)                              # nothing but the JSON on stdout
    _check_rows(rows)
    assert any(r["figure"].startswith("load average") for r in rows)
    assert (proc.returncode == 1) == any(r["met"] is False for r in rows)


# -- the convention module itself --------------------------------------------------------------
def test_rows_compute_met_and_informative_rows_stay_null():
    c = load_common()
    assert c.row("a", 3.9, "x", "<= 4")["met"] is True
    assert c.row("a", 4.1, "x", "<= 4")["met"] is False
    assert c.row("a", 6, "calls", "== 6")["met"] is True and c.row("a", 7, "calls", "== 6")["met"] is False
    assert c.row("a", 1.0, "s")["met"] is None
    assert c.row("a", None, "s", "<= 1")["met"] is False


def test_median_and_ratio_rows_report_the_spread():
    c = load_common()
    m = c.median_row("t", [0.3, 0.1, 0.2, 0.5, 0.4], "ms", scale=1000, digits=1)
    assert (m["value"], m["min"], m["max"], len(m["samples"])) == (300.0, 100.0, 500.0, 5)
    r = c.ratio_row("r", [2, 4, 6], [1, 1, 2], "<= 4")
    assert (r["value"], r["min"], r["max"], r["met"]) == (4.0, 2.0, 4.0, True)
    assert c.ratio_row("r", [], [1.0], "<= 4")["met"] is False


def test_json_stdout_sends_everything_else_to_stderr(tmp_path):
    script = tmp_path / "b.py"
    script.write_text(
        "import subprocess, sys\n"
        f"sys.path.insert(0, {str(BENCH)!r})\n"
        "from _common import emit, json_stdout, row\n"
        "with json_stdout(True) as out:\n"
        "    print('chatter')\n"
        "    subprocess.run(['echo', 'child chatter'])\n"
        "    emit([row('f', 1, 's')], as_json=True, out=out)\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [{"figure": "f", "value": 1, "unit": "s", "target": None, "met": None}]
    assert "chatter" in proc.stderr and "child chatter" in proc.stderr
