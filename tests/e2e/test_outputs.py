"""Outputs come home through `fleet up` as a user runs it: links kept, hostile ones reported,
and streamed to disk (the controller's memory does not grow with the outputs)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FLEET, processes_under

# Runs `fleet up` as its only child and prints that child's peak RSS (KiB) on its last stderr line.
_PEAK_RSS = ("import resource, subprocess, sys\n"
             "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
             "sys.stdout.write(p.stdout); sys.stderr.write(p.stderr)\n"
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
             "sys.exit(p.returncode)\n")


def _up_measured(cwd: Path, args: list[str], timeout: float = 600) -> tuple[subprocess.CompletedProcess, int]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "GITHUB_ACTIONS", "GITLAB_CI")
           and not k.startswith("GITHUB_")}
    proc = subprocess.run([sys.executable, "-c", _PEAK_RSS, FLEET, "up", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    *_, last = proc.stderr.strip().splitlines()
    return proc, int(last)


def test_links_in_outputs_come_home_and_hostile_ones_are_named(experiment, fleet_home):
    script = ('set -e; o=$FLEET_OUTPUT_DIR; mkdir -p $o/ckpt; echo weights > $o/ckpt/model.bin; '
              'ln -s ckpt/model.bin $o/latest; ln $o/ckpt/model.bin $o/ckpt/hard.bin; '
              'ln -s /etc/passwd $o/abs-escape; ln -s ../../../.. $o/up-escape; echo done')
    proc, _ = _up_measured(experiment, ["--gpus", "1", "--json", "--", "sh", "-c", script])
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    node = Path(summary["run_dir"]) / "node-0"
    assert (node / "ckpt" / "model.bin").read_text() == "weights\n"
    assert (node / "latest").is_symlink() and os.readlink(node / "latest") == "ckpt/model.bin"
    assert (node / "latest").read_text() == "weights\n"
    assert os.stat(node / "ckpt" / "hard.bin").st_ino == os.stat(node / "ckpt" / "model.bin").st_ino
    assert not (node / "abs-escape").exists() and not (node / "abs-escape").is_symlink()
    assert not (node / "up-escape").is_symlink()
    skipped = summary["outputs_skipped"]
    assert len(skipped) == 2 and any(s.startswith("./abs-escape:") for s in skipped), skipped
    assert any(s.startswith("./up-escape:") and "outside" in s for s in skipped), skipped
    for name in ("abs-escape", "up-escape"):   # each one said on the terminal, not only in JSON
        assert f"output skipped on node 0: ./{name}:" in proc.stderr, proc.stderr
    assert summary["outputs_symlinks"] == 1 and summary["outputs_fetched"] == 2
    assert processes_under(fleet_home) == []


@pytest.mark.timeout(900)   # 256 MiB through SSH: seconds when idle, minutes with the cores busy
def test_outputs_stream_to_disk_in_bounded_controller_memory(experiment, fleet_home):
    # The whole tar used to sit in memory, twice: 400 MiB of outputs cost ~850 MB of controller RSS,
    # so 256 MiB cost well over the 250 MB bound.
    size_mb = 256
    # Random bytes: zeros would shrink to nothing in any compressed transfer and prove nothing.
    script = (f'set -e; o=$FLEET_OUTPUT_DIR; mkdir -p $o; '
              f'for i in 1 2 3 4; do head -c {size_mb // 4}M /dev/urandom > $o/part-$i; done')
    proc, peak_kib = _up_measured(experiment, ["--gpus", "1", "--json", "--", "sh", "-c", script], timeout=850)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    parts = sorted((Path(summary["run_dir"]) / "node-0").glob("part-*"))
    assert [p.stat().st_size for p in parts] == [size_mb // 4 << 20] * 4
    assert peak_kib < 250 * 1024, f"controller peak RSS {peak_kib / 1024:.0f} MB for {size_mb} MiB of outputs"


def test_many_skipped_outputs_are_named_a_few_then_counted(experiment, fleet_home):
    """3,000 FIFOs in a run's outputs printed 3,000 warning lines: ten are named, the rest counted."""
    script = 'set -e; mkdir -p $FLEET_OUTPUT_DIR; for i in $(seq 1 40); do mkfifo $FLEET_OUTPUT_DIR/p$i; done'
    proc = subprocess.run([FLEET, "up", "--gpus", "1", "--json", "--", "sh", "-c", script], cwd=experiment,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["outputs_skipped"]) == 40, proc.stdout[-3000:] + proc.stderr[-3000:]
    named = [line for line in proc.stderr.splitlines() if "output skipped on node 0:" in line]
    assert len(named) == 10, proc.stderr
    assert "30 more outputs skipped on node 0 (summary.json names the first 100)" in proc.stderr
