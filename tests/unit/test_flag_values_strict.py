"""A flag given an empty value (`--keep=`) is an error, not "not given"; numbers are ASCII digits
only (`--keep=١h` was read as 1 hour: Python's \\d matches every script's digits); `snapshot verify ''`
names no snapshot rather than verifying all of them."""
from __future__ import annotations

import pytest

from tests.conftest import run_fleet

from fleet.config.values import parse_duration, parse_money
from fleet.errors import UsageError

UP = ["up", "--dry-run", "--gpus", "1", "-p", "local", "-t", "local-1gpu"]


@pytest.mark.parametrize("flag", ["--keep", "--wait", "--max-duration"])
def test_an_empty_duration_flag_is_one_line(tmp_path, fleet_home, flag):
    proc = run_fleet([*UP, f"{flag}=", "--", "true"], cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(f"fleet: error: {flag}"), proc.stderr


@pytest.mark.parametrize("flag", ["--trial-timeout", "--idle-release", "--wait"])
def test_an_empty_sweep_duration_flag_is_one_line(tmp_path, fleet_home, flag):
    proc = run_fleet(["sweep", "--param", "x=1", f"{flag}=", "--", "true"], cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(f"fleet: error: {flag}"), proc.stderr


@pytest.mark.parametrize("text", ["١h", "١٠s", "٥", "1h٣٠m", "²"])
def test_digits_of_other_scripts_are_not_numbers(text):
    with pytest.raises(UsageError):
        parse_duration(text)
    with pytest.raises(UsageError):
        parse_money(text)


def test_non_ascii_digits_on_the_command_line_are_one_line(tmp_path, fleet_home):
    for flag in ("--keep=١h", "--max-duration=١٠s", "--budget=٥"):
        proc = run_fleet([*UP, flag, "--", "true"], cwd=tmp_path)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, (flag, proc.stderr)


def test_snapshot_verify_of_an_empty_name_verifies_nothing(tmp_path, fleet_home):
    data = tmp_path / "d"
    data.mkdir()
    (data / "a.txt").write_text("a\n")
    assert run_fleet(["snapshot", "create", str(data), "--name", "one"], cwd=tmp_path).returncode == 0
    proc = run_fleet(["snapshot", "verify", ""], cwd=tmp_path)
    assert proc.returncode != 0 and "verified" not in proc.stdout, (proc.stdout, proc.stderr)
    assert len([line for line in proc.stderr.splitlines() if line.startswith("fleet: error:")]) == 1, proc.stderr


@pytest.mark.parametrize("toml, says", [
    ('state_url = "ftp://x"', "state database URL 'ftp'… is not supported"),
    ('cache_max = "lots"', "cache_max / FLEET_CHUNK_CACHE_MAX = 'lots' is not a size"),
    ('cache_max = "inf"', "is not a size"),
    ('cache_max = "-5G"', "is not a size"),
])
def test_a_dry_run_refuses_what_the_run_refuses(tmp_path, fleet_home, toml, says):
    (tmp_path / "fleet.toml").write_text(f'project = "p"\ncommand = "true"\n{toml}\n')
    proc = run_fleet(["up", "--dry-run", "--gpus", "1"], cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("fleet: error: ") and says in proc.stderr, proc.stderr


def test_a_dry_run_resuming_a_run_that_is_not_there_is_refused(tmp_path, fleet_home):
    proc = run_fleet([*UP, "--resume", "r-nosuch", "--", "true"], cwd=tmp_path)
    assert proc.returncode == 4 and "no run 'r-nosuch'" in proc.stderr, proc.stderr
