"""The command table that answers `fleet --help` without importing typer matches the real commands,
and the root behaves as users expect: help on no arguments, one suggestion for a typo."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys

import typer
import typer.main

from fleet.cli import catalog
from tests.conftest import FLEET


def registered(module: str) -> dict[str, str]:
    holder = typer.Typer()
    importlib.import_module(f"fleet.cli.{module}").register(holder)
    group = typer.main.get_group(holder)
    return {name: group.get_command(None, name).get_short_help_str(limit=1000)
            for name in group.list_commands(None)}


def test_every_catalog_entry_is_registered_by_its_module_with_its_summary():
    for entry in catalog.COMMANDS:
        commands = registered(entry.module)
        assert entry.name in commands, f"fleet.cli.{entry.module} does not register `{entry.name}`"
        assert commands[entry.name] == entry.summary, entry.name


def test_every_registered_command_is_in_the_catalog():
    modules = {entry.module for entry in catalog.COMMANDS}
    for module in modules:
        for name in registered(module):
            assert name in catalog.BY_NAME, f"`fleet {name}` (fleet.cli.{module}) is missing from catalog.COMMANDS"


def test_root_help_imports_neither_typer_nor_any_command_module():
    code = ("import sys; sys.argv = ['fleet', '--help']\n"
            "from fleet.cli.main import run\n"
            "try:\n    run()\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "loaded = [m for m in sys.modules if m.split('.')[0] in ('typer', 'click', 'rich')"
            " or m.startswith('fleet.cli.') and m not in ('fleet.cli.main', 'fleet.cli.catalog')]\n"
            "print('LOADED', loaded, file=sys.stderr)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stderr
    assert "Commands:" in out.stdout and "status" in out.stdout


def test_fleet_alone_prints_the_help_and_succeeds():
    out = subprocess.run([FLEET], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert out.stdout.startswith("Usage: fleet")
    assert "--debug" in out.stdout and "--install-completion" in out.stdout
    assert "error" not in out.stderr


def test_a_group_alone_prints_its_help_on_several_lines():
    out = subprocess.run([FLEET, "snapshot"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert out.stdout.startswith("Usage: fleet snapshot") and len(out.stdout.splitlines()) > 5


def test_a_typo_gets_one_suggestion():
    out = subprocess.run([FLEET, "stauts"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.count("Did you mean 'status'?") == 1, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_help_lists_every_summary_in_full_even_at_80_columns():
    text = catalog.root_help(width=80)
    flat = " ".join(text.split())
    for entry in catalog.COMMANDS:
        assert " ".join(entry.summary.split()) in flat


def test_status_fast_path_accepts_exactly_the_flags_the_typer_command_declares():
    from fleet.cli import status_view
    holder = typer.Typer()
    importlib.import_module("fleet.cli.leases").register(holder)
    command = typer.main.get_group(holder).get_command(None, "status")
    declared = {opt for param in command.params for opt in param.opts if opt.startswith("--")}
    assert declared - {"--help"} == set(status_view.FLAGS)
    assert status_view.fast_args(["status", "--json", "--fast"]) == {"json_out": True, "all_users": False,
                                                                      "fast": True, "refresh": False}
    assert status_view.fast_args(["status", "--refresh"])["refresh"] is True
    assert status_view.fast_args(["status", "--jsn"]) is None        # typos go to typer's error
    assert status_view.fast_args(["status", "--json", "--json"]) is None
    assert status_view.fast_args(["status", "--help"]) is None


def test_status_fast_path_prints_what_the_typer_command_prints(tmp_path):
    env = {**os.environ, "FLEET_HOME": str(tmp_path / "home")}
    code = ("import sys\nfrom fleet.cli.errors import main_guard\nfrom fleet.cli.main import app\n"
            "sys.argv = ['fleet', *sys.argv[1:]]\nsys.exit(main_guard(app))\n")
    for flags in ([], ["--json"], ["--json", "--all-users", "--fast"]):
        fast = subprocess.run([FLEET, "status", *flags], capture_output=True, text=True, env=env, timeout=60)
        slow = subprocess.run([sys.executable, "-c", code, "status", *flags], capture_output=True, text=True,
                              env=env, timeout=60)
        assert (fast.returncode, fast.stdout, fast.stderr) == (slow.returncode, slow.stdout, slow.stderr), flags
    probe = ("import sys; sys.argv = ['fleet', 'status', '--json']\nfrom fleet.cli.main import run\n"
             "try:\n    run()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
             "print('LOADED', [m for m in sys.modules if m.split('.')[0] in ('typer', 'click')], file=sys.stderr)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60)
    assert "LOADED []" in out.stderr, out.stderr


def test_status_with_no_lease_imports_neither_typing_nor_the_models(tmp_path):
    """`fleet status`'s start-up is measured against bare Python (scripts/bench/cli_startup.py):
    typing, dataclasses (fleet.models) and tomllib cost more than the rest of an empty status."""
    env = {**os.environ, "FLEET_HOME": str(tmp_path / "home")}
    env.pop("FLEET_STATE_URL", None)
    probe = ("import sys; sys.argv = ['fleet', 'status']\nfrom fleet.cli.main import run\n"
             "try:\n    run()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
             "print('LOADED', [m for m in ('typing', 'dataclasses', 'inspect', 'tomllib', 'fleet.models')"
             " if m in sys.modules], file=sys.stderr)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60,
                         cwd=tmp_path)
    assert "LOADED []" in out.stderr, out.stderr
    assert "no live leases" in out.stdout


def test_a_typo_in_a_group_gets_one_suggestion():
    # run this checkout's fleet (the venv's script imports the installed one)
    code = "import sys; from fleet.cli.main import run; sys.argv = ['fleet', 'hosts', 'list']; sys.exit(run())"
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=repo)
    assert out.returncode == 2
    assert out.stderr.count("Did you mean 'ls'?") == 1, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_every_option_of_every_command_says_what_it_does():
    """`fleet CMD --help` lists no bare flag (a `--json` with no words after it)."""
    bare = []
    for entry in catalog.COMMANDS:
        holder = typer.Typer()
        importlib.import_module(f"fleet.cli.{entry.module}").register(holder)
        command = typer.main.get_group(holder).get_command(None, entry.name)
        commands = list(command.commands.values()) if hasattr(command, "commands") else [command]
        for cmd in commands:
            for param in cmd.params:
                if param.param_type_name == "option" and not param.help and "--help" not in param.opts:
                    bare.append(f"fleet {entry.name} {cmd.name if cmd is not command else ''} {param.opts[0]}")
    assert not bare, bare
