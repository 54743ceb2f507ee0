"""`fleet snapshot create`'s plain forms skip typer (fleet/cli/snapshot_create.py): they accept exactly
what the typer command declares, print what it prints, and never import typer or click."""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import typer

from fleet.cli import snapshot_create

FLEET = str(Path(sys.executable).parent / "fleet")
TYPER_ROUTE = ("import sys\nfrom fleet.cli.errors import main_guard\nfrom fleet.cli.main import app\n"
               "sys.argv = ['fleet', *sys.argv[1:]]\nsys.exit(main_guard(app))\n")


def test_the_fast_route_takes_exactly_the_options_the_typer_command_declares():
    holder = typer.Typer()
    importlib.import_module("fleet.cli.snapshot").register(holder)
    group = typer.main.get_group(holder).get_command(None, "snapshot")
    command = group.get_command(None, "create")
    declared = {opt for param in command.params for opt in param.opts if opt.startswith("-")}
    assert declared - {"--help"} == set(snapshot_create.VALUE_OPTIONS) | set(snapshot_create.FLAG_OPTIONS)
    assert snapshot_create.fast_args(["snapshot", "create", "d", "-n", "x", "--json"]) == {
        "path": "d", "name": "x", "store": None, "json_out": True}
    for other in (["snapshot", "create"], ["snapshot", "create", "d", "--jsn"], ["snapshot", "create", "d", "e"],
                  ["snapshot", "create", "d", "--json", "--json"], ["snapshot", "create", "d", "--help"],
                  ["snapshot", "create", "d", "--name"], ["snapshot", "create", "--name=x", "d"],
                  ["snapshot", "ls"]):
        assert snapshot_create.fast_args(other) is None, other


def test_both_routes_print_the_same_and_the_fast_one_loads_no_typer(tmp_path):
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "a.txt").write_text("a\n")
    (tree / "b.bin").write_bytes(os.urandom(4096))
    time.sleep(2.5)        # past the stat cache's racy window (statcache.RACY_S), so the last probe is a hit
    env = {**os.environ, "FLEET_HOME": str(tmp_path / "home"), "CI": "true"}
    env.pop("FLEET_DEBUG", None)
    for flags in (["--json"], [], ["--name", "v1", "--json"], ["--store", str(tmp_path / "other")]):
        argv = ["snapshot", "create", str(tree), *flags]
        fast = subprocess.run([FLEET, *argv], capture_output=True, text=True, env=env, timeout=60)
        slow = subprocess.run([sys.executable, "-c", TYPER_ROUTE, *argv], capture_output=True, text=True, env=env,
                              timeout=60)
        assert fast.returncode == slow.returncode == 0, (fast.stderr, slow.stderr)
        if "--json" in flags:
            a, b = json.loads(fast.stdout), json.loads(slow.stdout)
            assert set(a) == set(b) and a["files"] == 2, (a, b)
            same = ("id", "name", "files", "size", "store")     # the rest says what this run read and stored
            assert [a[k] for k in same] == [b[k] for k in same], (a, b)
        else:
            assert fast.stdout == slow.stdout and len(fast.stdout.strip()) == 64
    # a bad path: one line and the same exit code on both routes
    argv = ["snapshot", "create", str(tmp_path / "missing"), "--json"]
    fast = subprocess.run([FLEET, *argv], capture_output=True, text=True, env=env, timeout=60)
    slow = subprocess.run([sys.executable, "-c", TYPER_ROUTE, *argv], capture_output=True, text=True, env=env, timeout=60)
    assert (fast.returncode, fast.stderr) == (slow.returncode, slow.stderr) and fast.returncode != 0
    assert fast.stderr.count("\n") == 1 and "no such file or directory" in fast.stderr
    probe = ("import sys; sys.argv = ['fleet', 'snapshot', 'create', sys.argv[1], '--json']\n"
             "from fleet.cli.main import run\n"
             "try:\n    run()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
             "print('LOADED', [m for m in sys.modules if m.split('.')[0] in ('typer', 'click', 'rich', 'sqlite3')],"
             " file=sys.stderr)\n")
    out = subprocess.run([sys.executable, "-c", probe, str(tree)], capture_output=True, text=True, env=env, timeout=60)
    assert "LOADED []" in out.stderr, out.stderr          # unchanged tree: no typer, no rich, no SQLite either
