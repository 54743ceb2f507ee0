"""`-o -` is standard output, as for most tools: `fleet report -o -` wrote a file named "-" into the
experiment and said `wrote -`, leaving stdout empty for the pipe that asked for it."""
from __future__ import annotations

import json

import pytest

from tests.conftest import run_fleet


@pytest.mark.parametrize("args", [["report", "--json", "-o", "-"], ["report", "--format", "html", "-o", "-"],
                                  ["config", "schema", "-o", "-"]], ids=["report-json", "report-html", "schema"])
def test_output_dash_prints_to_stdout_and_writes_no_file(experiment, fleet_home, args):
    before = sorted(p.name for p in experiment.rglob("*"))
    proc = run_fleet(args, cwd=experiment, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert not (experiment / "-").exists()
    assert sorted(p.name for p in experiment.rglob("*")) == before   # html's default runs/reports/ file neither
    if "html" in args:
        assert proc.stdout.lstrip().lower().startswith("<!doctype html")
    else:
        json.loads(proc.stdout)
