"""A setup that replaces the lease's venv `python` with a program that prints far more than any
probe answer: the environment capture stops reading at its cap and says so in one warning line,
and the run itself goes on and succeeds (the record just has no environment)."""
from __future__ import annotations

import json

from tests.conftest import run_fleet

BREAK_PYTHON = """\
# The venv's python becomes a program printing 64 MiB on one line (bounded, so that without the
# probe's cap this test still ends).
py="$(command -v python)"
rm -f "$py"
printf '#!/bin/sh\\nhead -c 67108864 /dev/zero | tr "\\\\000" x\\n' > "$py"
chmod +x "$py"
"""


def test_a_venv_python_printing_without_bound_is_a_warning_and_the_run_goes_on(fleet_home, experiment):
    (experiment / "break_python.sh").write_text(BREAK_PYTHON)
    (experiment / "fleet.toml").write_text('project = "t"\ncommand = "echo the command ran"\n'
                                           'setup = "sh break_python.sh"\n'
                                           'template = "local-1gpu"\nmax_duration = "5m"\n')
    done = run_fleet(["up", "--ci", "--json"], cwd=experiment, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "the command ran" in done.stderr
    warning = [line for line in done.stderr.splitlines() if "could not capture the machines' environment" in line]
    assert len(warning) == 1, done.stderr[-3000:]
    assert "printed more than 16 MiB" in warning[0] and "xxxx" not in warning[0]
    run_id = json.loads(done.stdout)["run_id"]
    shown = run_fleet(["runs", "show", run_id, "--json"], cwd=experiment)
    assert shown.returncode == 0 and json.loads(shown.stdout)["status"] == "succeeded", shown.stdout[-2000:]
