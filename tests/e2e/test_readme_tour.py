"""README's "A short tour" runs as written on the local provider: the block is read from README.md,
LEASE and RUN are filled in from `fleet status --json`, and `fleet ssh` gets a command instead of a
terminal. Every step must exit 0."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, processes_under, wait_until

pytestmark = pytest.mark.timeout(400)

IDS = ('LEASE=$(fleet status --json | python -c \'import json,sys; print(json.load(sys.stdin)["leases"][0]["id"])\')\n'
       'RUN=$(fleet status --json | python -c \'import json,sys; print(json.load(sys.stdin)["leases"][0]["runs"][0]["id"])\')\n')


def tour_script() -> str:
    text = (REPO / "README.md").read_text()
    block = re.search(r"## A short tour\n\n```bash\n(.*?)```", text, re.S).group(1)
    lines = []
    for line in block.splitlines():
        if line.startswith("source "):
            continue                                  # the test runs with the venv's bin first on PATH
        line = re.sub(r"\s+#\s.*$", "", line) if line.startswith("fleet ") else line
        line = re.sub(r"\bLEASE\b", '"$LEASE"', line) if line.startswith("fleet ") else line
        line = re.sub(r"\bRUN\b", '"$RUN"', line) if line.startswith("fleet ") else line
        if line.startswith("fleet ssh "):
            line += " -- true"                         # a command instead of an interactive shell
        lines.append(line)
        if "--keep" in line:
            lines.append(IDS.rstrip("\n"))
    return "set -eux\n" + "\n".join(lines) + "\n"


def test_readme_tour_runs_as_written(tmp_path, fleet_home):
    script = tour_script()
    assert "fleet init" in script and '"$LEASE"' in script and "fleet down" in script
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "GITHUB_ACTIONS", "GITLAB_CI")}
    env.update(PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}", GIT_AUTHOR_NAME="t",
               GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com")
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=360)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "rank 1 of 2" in out and "fleet up --dry-run: nothing was leased" in out
    # a detached run (`fleet up -d`) ends on its own: its supervisor exits once the run is recorded
    assert wait_until(lambda: processes_under(fleet_home) == [], timeout=90), processes_under(fleet_home)
