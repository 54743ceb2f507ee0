"""examples/torchrun's launcher line on 2 local machines, with a stub in torchrun's place (torch is too
large for CI): each machine gets one torchrun with the whole group's shape and node 0's address."""
from __future__ import annotations

import json
import re
import shutil
import sys

import pytest

from tests.conftest import REPO, run_fleet

pytestmark = pytest.mark.timeout(180)

STUB = '''#!{python}
import argparse, os
p = argparse.ArgumentParser()
for flag in ("--nnodes", "--nproc-per-node", "--node-rank", "--master-addr", "--master-port"):
    p.add_argument(flag, required=True)
p.add_argument("script")
a = p.parse_args()
assert os.path.exists(a.script), a.script
print(f"stub nnodes={{a.nnodes}} nproc={{a.nproc_per_node}} node_rank={{a.node_rank}} "
      f"master={{a.master_addr}}:{{a.master_port}} fleet={{os.environ['FLEET_MASTER_ADDR']}}:"
      f"{{os.environ['FLEET_MASTER_PORT']}} script={{a.script}}")
'''


def test_one_torchrun_per_machine_with_the_group_shape(tmp_path, fleet_home):
    exp = tmp_path / "torchrun"
    shutil.copytree(REPO / "examples" / "torchrun", exp)
    toml = (exp / "fleet.toml").read_text()
    assert re.search(r"^setup = .*pip install", toml, re.M)
    (exp / "fleet.toml").write_text(re.sub(r"^setup = .*\n", "", toml, flags=re.M))   # no torch download here
    stub = tmp_path / "torchrun-stub"
    stub.write_text(STUB.format(python=sys.executable))
    stub.chmod(0o755)
    up = run_fleet(["up", "--json", "--allow-dirty", "--env", f"TORCHRUN={stub}"], cwd=exp, timeout=150)
    assert up.returncode == 0, up.stderr
    summary = json.loads(up.stdout)
    assert (summary["machines"], summary["gpus"]) == (2, 8)
    lines = sorted(line for line in up.stderr.splitlines() if "stub nnodes=" in line)
    assert len(lines) == 2, up.stderr
    masters = set()
    for rank, line in enumerate(lines):
        assert line.startswith(f"[{rank}] stub nnodes=2 nproc=4 node_rank={rank} master="), line
        shown = re.search(r"master=(\S+) fleet=(\S+) script=train.py", line)
        assert shown and shown.group(1) == shown.group(2), line      # the conventional = fleet's own
        masters.add(shown.group(1))
    assert len(masters) == 1                                          # both meet at node 0
