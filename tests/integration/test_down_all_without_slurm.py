"""`fleet down --all` on a computer that has Slurm's tools but never leased from Slurm says nothing
about Slurm: it used to ask `squeue` for leftovers and warn "could not sweep leftover slurm
machines: squeue failed" on every call wherever slurm-client was installed without a cluster."""
from __future__ import annotations

import os

from tests.conftest import run_fleet


def _failing_squeue(bin_dir) -> None:
    bin_dir.mkdir()
    squeue = bin_dir / "squeue"
    squeue.write_text("#!/bin/sh\necho 'squeue: error: Could not establish a configuration source' >&2\nexit 1\n")
    squeue.chmod(0o755)


def test_down_all_asks_slurm_nothing_when_no_lease_was_slurms(experiment, fleet_home, tmp_path):
    _failing_squeue(tmp_path / "bin")
    env = {"PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    up = run_fleet(["up", "--json"], cwd=experiment, env=env)     # a local lease, released at the end
    assert up.returncode == 0, up.stderr
    down = run_fleet(["down", "--all"], cwd=experiment, env=env)
    assert down.returncode == 0, down.stderr
    assert "slurm" not in down.stderr.lower() and "squeue" not in down.stderr, down.stderr
