"""An id far longer than any fleet makes (a pasted log, a script's bug) is "no such run/lease",
exit 4, in one bounded line: SQLite refused the prefix search as "LIKE pattern too complex" and fleet
blamed a locked or full database (exit 3), echoing all 60,000 characters back."""
from __future__ import annotations

import pytest

from fleet.errors import ExitCode
from tests.conftest import run_fleet


@pytest.mark.parametrize("argv", [["runs", "show"], ["logs"], ["down"], ["extend", "{id}", "5m"], ["rerun"]])
def test_an_absurdly_long_id_is_not_found_in_one_bounded_line(fleet_home, tmp_path, argv):
    long_id = "r" * 60_000
    args = [a.replace("{id}", long_id) for a in argv] if "{id}" in argv else [*argv, long_id]
    got = run_fleet(args, cwd=tmp_path)
    assert got.returncode == ExitCode.NOT_FOUND, got.stderr[:300]
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fleet: error: no ") and len(lines[0]) < 2500, lines[0][:300]
    assert "characters left out" in lines[0]


def test_a_prefix_of_several_ids_names_them(fleet_home, tmp_path):
    """`fleet logs r-2026` said "no run 'r-2026'" when two runs began so."""
    from fleet.state import open_state
    state = open_state()
    for run_id in ("r-abc-1", "r-abc-2"):
        state.create_run(run_id, lease_id=None, project="p", user="u", command="true", log_path="", output_dir="")
    got = run_fleet(["logs", "r-abc"], cwd=tmp_path)
    assert got.returncode == ExitCode.NOT_FOUND
    assert "fleet: error: 'r-abc' names more than one run (r-abc-1, r-abc-2): give more of the id" in got.stderr
    assert "no run 'r-abd'" in run_fleet(["logs", "r-abd"], cwd=tmp_path).stderr


def test_a_prefix_names_ids_of_its_own_case_only(fleet_home, tmp_path):
    """SQLite's LIKE ignores case: `fleet logs r-abc` picked a teammate's planted `R-ABC-…` run (and
    `fleet down l-abc` their `L-ABC…` lease), where PostgreSQL would have said no such run."""
    from fleet.state import open_state
    state = open_state()
    state.create_run("R-ABC-planted", lease_id=None, project="p", user="mallory", command="true", log_path="",
                     output_dir="")
    got = run_fleet(["logs", "r-abc"], cwd=tmp_path)
    assert got.returncode == ExitCode.NOT_FOUND and "no run 'r-abc'" in got.stderr, got.stderr
    assert "no run" not in run_fleet(["logs", "R-ABC"], cwd=tmp_path).stderr   # its own case still names it
