"""Outputs that do not all come home are never a clean success: a transfer cut short, the
outputs_max limit, a sparse file (which must not be inflated on the way) — as `fleet up` shows them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import processes_under, run_fleet

# `fleet up`, with the outputs channel cut after CUT bytes (as a spot reclaim or a lost link would).
_CUT = ("import sys\n"
        "import fleet.stage as s\n"
        "CUT, read = int(sys.argv.pop(1)), s._ChannelStream.read\n"
        "def cut(self, n=-1):\n"
        "    self.sent = getattr(self, 'sent', 0)\n"
        "    if self.sent >= CUT:\n"
        "        self.chan.close()\n"
        "        return b''\n"
        "    data = read(self, min(n, CUT - self.sent))\n"
        "    self.sent += len(data)\n"
        "    return data\n"
        "s._ChannelStream.read = cut\n"
        "from fleet.cli.main import run\n"
        "sys.argv[0] = 'fleet'\n"
        "sys.exit(run())\n")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("CI", "GITHUB_ACTIONS", "GITLAB_CI")
            and not k.startswith("GITHUB_")}


def test_a_transfer_cut_short_ends_the_run_as_an_error_naming_the_machine(experiment, fleet_home):
    script = ('set -e; o=$FLEET_OUTPUT_DIR; mkdir -p $o; head -c 8M /dev/urandom > $o/model.ckpt; '
              'echo \'{"loss": 1}\' > $o/metrics.json')
    proc = subprocess.run([sys.executable, "-c", _CUT, str(2 << 20), "up", "--gpus", "1", "--",
                           "sh", "-c", script], cwd=experiment, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    assert proc.returncode == 10, proc.stderr                    # infrastructure: not a clean success
    [run_dir] = (experiment / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "error" and summary["exit_code"] == 10
    assert summary["rank_exit_codes"] == {"0": 0}                # the command itself succeeded
    [why] = summary["outputs_incomplete"]
    assert why.startswith("node 0 (") and why.endswith("): the transfer ended early (unexpected end of data)"), why
    assert summary["message"] == f"the command succeeded, but not all outputs came home: {why}"
    node = run_dir / "node-0"
    left = sorted(p.name for p in node.iterdir()) if node.exists() else []
    assert "model.ckpt" not in left and not [n for n in left if n.startswith(".fleet-part")], left
    last = proc.stderr.strip().splitlines()[-1]              # the line a user reads last
    assert last.startswith(f"fleet: run {summary['run_id']} error · exit 10") and why in last, last
    machine = why[len("node 0 ("):].split(")")[0]
    assert f"warning: outputs of node 0 ({machine}) did not all come home: the transfer ended early" in proc.stderr
    record = json.loads(run_fleet(["runs", "show", summary["run_id"], "--json"], cwd=experiment).stdout)
    assert record["status"] == "error" and record["exit_status"] == 10 and why in record["reason"], record
    assert processes_under(fleet_home) == []


def test_sparse_outputs_stay_sparse(experiment, fleet_home):
    """A preallocated 1 GiB file used no disk on the machine and 1 GiB here (tar sent its zeros)."""
    script = 'set -e; o=$FLEET_OUTPUT_DIR; mkdir -p $o; truncate -s 1G $o/sparse.bin; echo end >> $o/sparse.bin'
    proc = run_fleet(["up", "--gpus", "1", "--json", "--", "sh", "-c", script], cwd=experiment, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    sparse = Path(summary["run_dir"]) / "node-0" / "sparse.bin"
    assert sparse.stat().st_size == (1 << 30) + 4 and sparse.stat().st_blocks * 512 < 8 << 20
    with open(sparse, "rb") as fh:
        fh.seek(1 << 30)
        assert fh.read() == b"end\n"
    assert "outputs_incomplete" not in summary and summary["outputs_fetched"] == 1
    assert processes_under(fleet_home) == []


def test_outputs_past_outputs_max_stop_at_the_file_that_crossed_it(experiment, fleet_home):
    toml = experiment / "fleet.toml"
    toml.write_text(toml.read_text() + 'outputs_max = "1M"\n')
    script = 'set -e; o=$FLEET_OUTPUT_DIR; mkdir -p $o; echo 1 > $o/small.txt; head -c 2M /dev/urandom > $o/dense.bin'
    proc = run_fleet(["up", "--gpus", "1", "--json", "--", "sh", "-c", script], cwd=experiment, timeout=300)
    assert proc.returncode == 10, proc.stderr
    summary = json.loads(proc.stdout)
    [why] = summary["outputs_incomplete"]
    assert why.endswith("./dense.bin: the outputs pass their limit of 1.0 MiB here (2.0 MiB with this file)"), why
    assert why.split("): ", 1)[1] in proc.stderr and summary["status"] == "error"   # said on screen too
    assert not (Path(summary["run_dir"]) / "node-0" / "dense.bin").exists()
    assert processes_under(fleet_home) == []
