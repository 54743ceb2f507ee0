"""`-o PATH` of `fleet report` and `fleet config schema` renamed a temporary file over PATH whatever
it was: run as root, `fleet report -o /dev/null` left a regular file as /dev/null (found doing it to
/dev/full), `-o /dev/stdout` replaced that symlink, and a write to /dev/full (no space left) still
said `wrote /dev/full` and exited 0; `-o /` was an internal error. A device or FIFO is now written
into, a failed write is one `fleet: error:` line and a non-zero exit, a directory is refused.
Symlinks to the devices stand in for them here: the old code replaced the link, never the device."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from fleet.errors import ExitCode
from tests.conftest import run_fleet

COMMANDS = {"report": ["report", "--format", "csv", "-o"], "schema": ["config", "schema", "-o"]}


@pytest.mark.parametrize("command", COMMANDS)
def test_a_device_is_written_into_not_replaced(tmp_path, fleet_home, command):
    out = tmp_path / "out"
    out.symlink_to("/dev/null")
    proc = run_fleet([*COMMANDS[command], str(out)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert out.is_symlink() and os.readlink(out) == "/dev/null"
    assert Path("/dev/null").is_char_device()


@pytest.mark.skipif(not Path("/dev/full").is_char_device(), reason="needs /dev/full")
@pytest.mark.parametrize("command", COMMANDS)
def test_a_write_that_fails_is_an_error(tmp_path, fleet_home, command):
    out = tmp_path / "out"
    out.symlink_to("/dev/full")
    proc = run_fleet([*COMMANDS[command], str(out)], cwd=tmp_path)
    assert proc.returncode == ExitCode.ENVIRONMENT, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fleet: error: cannot write") and "No space left" in lines[0]
    assert out.is_symlink() and os.readlink(out) == "/dev/full"


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("target", ["/", "."])
def test_a_directory_is_refused_in_one_line(tmp_path, fleet_home, command, target):
    proc = run_fleet([*COMMANDS[command], target], cwd=tmp_path)
    assert proc.returncode == ExitCode.ENVIRONMENT, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fleet: error: cannot write") and "internal" not in lines[0]


def test_a_regular_file_is_still_replaced_whole(tmp_path, fleet_home):
    out = tmp_path / "report.csv"
    out.write_text("old\n")
    proc = run_fleet([*COMMANDS["report"], str(out)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and not out.is_symlink() and out.read_text() != "old\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".report.csv")] == []


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("name", ["fleet.toml", "train.py", "pyproject.toml"])
def test_an_experiments_config_or_code_is_never_replaced_by_output(tmp_path, fleet_home, command, name):
    """`fleet config schema -o fleet.toml` replaced the experiment's config with the schema."""
    precious = tmp_path / name
    precious.write_text("command = 'python train.py'\n")
    proc = run_fleet([*COMMANDS[command], str(precious)], cwd=tmp_path)
    assert proc.returncode != 0 and "is an input" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert precious.read_text() == "command = 'python train.py'\n"
    again = tmp_path / "out.csv"
    again.write_text("an earlier report\n")
    assert run_fleet([*COMMANDS[command], str(again)], cwd=tmp_path).returncode == 0   # outputs are replaced


@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_under_a_file_is_the_same_error_and_exit_code_for_both(tmp_path, fleet_home, command):
    """`fleet report -o DIR/out` exited 2 (usage) where `fleet config schema -o DIR/out` exited 3 for
    the same unwritable path: both give the environment code README's exit-code table gives it."""
    (tmp_path / "DIR").write_text("a file, not a directory\n")
    proc = run_fleet([*COMMANDS[command], str(tmp_path / "DIR" / "out")], cwd=tmp_path)
    assert proc.returncode == ExitCode.ENVIRONMENT, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fleet: error: cannot write {tmp_path / 'DIR' / 'out'}: ")


def test_a_default_report_folder_that_cannot_be_made_is_the_same_exit_code(tmp_path, fleet_home):
    (tmp_path / "runs").write_text("a file where runs/reports/ would go\n")
    proc = run_fleet(["report", "--format", "html"], cwd=tmp_path)
    assert proc.returncode == ExitCode.ENVIRONMENT, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fleet: error: cannot create ") and "-o PATH" in lines[0]
