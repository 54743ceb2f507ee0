"""Two output formats asked for at once (`--json` with another): refused in one line, as `fleet
report --json --format csv` is, never one of them silently picked (a script piping `--format csv`
into a spreadsheet got JSON)."""
from __future__ import annotations

import pytest

from tests.conftest import run_fleet


@pytest.mark.parametrize("args", [["runs", "compare", "--sweep", "s", "--json", "--format", "csv"],
                                  ["audit", "--verify", "--json", "--md"], ["audit", "r", "--json", "--md"]],
                         ids=["compare", "audit-verify", "audit-run"])
def test_json_with_another_format_is_refused_in_one_line(experiment, fleet_home, args):
    proc = run_fleet(args, cwd=experiment, timeout=30)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("fleet: error:") and "two formats" in lines[0], proc.stderr
    assert proc.stdout == ""


def test_verify_with_md_is_refused_in_one_line(experiment, fleet_home):
    """`fleet audit --verify --md` printed --verify's plain lines and ignored --md without a word."""
    proc = run_fleet(["audit", "--verify", "--md"], cwd=experiment, timeout=30)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("fleet: error: --md goes with a run's lineage"), proc.stderr
    assert proc.stdout == ""
