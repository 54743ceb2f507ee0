"""A Slurm node step starts `python -S -c BOOT` in the directory the job was submitted from, which a
run can write: '' first on sys.path imported a planted json.py into the step (fleet's node helper,
which ends and releases the machine). BOOT drops it first; -I would also drop the PYTHONHOME a
module-loaded Python on a cluster needs."""
from __future__ import annotations

import json
import subprocess
import sys

from fleet.providers.slurm.steps import BOOT


def test_the_node_step_never_imports_what_a_run_left_where_the_job_was_submitted(tmp_path):
    (tmp_path / "json.py").write_text("import sys\nsys.stdout.write('PLANTED')\nsys.exit(0)\n")
    done = subprocess.run([sys.executable, "-S", "-c", BOOT], cwd=tmp_path, text=True, capture_output=True,
                          input=json.dumps("print('the node helper ran')") + "\n", timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHONHOME": sys.base_prefix})
    assert done.stdout == "the node helper ran\n", (done.stdout, done.stderr)
