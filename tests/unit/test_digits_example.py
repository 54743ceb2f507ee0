"""examples/digits trains for real, standalone and as a shard, and is deterministic."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits"


def train(workdir: Path, env_extra: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env.update(env_extra)
    proc = subprocess.run([sys.executable, "train.py", *args], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out_dir = Path(env_extra.get("FLEET_OUTPUT_DIR", workdir / "outputs"))
    if not out_dir.is_absolute():
        out_dir = workdir / out_dir
    return proc, json.loads((out_dir / "metrics.json").read_text())


@pytest.fixture
def workdir(tmp_path):
    pytest.importorskip("numpy")
    dest = tmp_path / "digits"
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("outputs", "__pycache__"))
    return dest


def test_standalone_run_learns_and_logs_every_epoch(workdir):
    proc, metrics = train(workdir, {}, "--epochs", "8")
    epochs = [line for line in proc.stdout.splitlines() if line.startswith("epoch")]
    assert len(epochs) == 8
    assert (metrics["rank"], metrics["world_size"], metrics["shard_size"], metrics["epochs"]) == (0, 1, 24000, 8)
    assert metrics["accuracy"] > 0.85            # chance is 0.1
    assert metrics["loss_history"][-1] < metrics["loss_history"][0]
    assert {"accuracy", "loss", "rank", "shard_size", "epochs", "seed"} <= set(metrics)


def test_each_rank_trains_on_its_own_shard_deterministically(workdir):
    shard = {"FLEET_NODE_RANK": "5", "FLEET_NUM_NODES": "8"}
    _, first = train(workdir, {**shard, "FLEET_OUTPUT_DIR": "a"})
    _, again = train(workdir, {**shard, "FLEET_OUTPUT_DIR": "b"})
    assert (workdir / "a" / "metrics.json").read_bytes() == (workdir / "b" / "metrics.json").read_bytes()
    assert (first["rank"], first["world_size"], first["shard_size"]) == (5, 8, 3000)
    assert first["accuracy"] > 0.8
    # per-GPU ranks take precedence over node ranks; another rank sees other data
    _, other = train(workdir, {**shard, "FLEET_RANK": "2", "FLEET_WORLD_SIZE": "16", "FLEET_OUTPUT_DIR": "c"})
    assert (other["rank"], other["world_size"], other["shard_size"]) == (2, 16, 1500)
    assert other["loss_history"] != first["loss_history"]
    # a different seed gives a different run
    _, reseeded = train(workdir, {**shard, "FLEET_OUTPUT_DIR": "d"}, "--seed", "7")
    assert reseeded["seed"] == 7 and reseeded["loss_history"] != first["loss_history"]


def test_rank_outside_the_world_fails_clearly(workdir):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env.update({"FLEET_NODE_RANK": "8", "FLEET_NUM_NODES": "8"})
    proc = subprocess.run([sys.executable, "train.py"], cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0 and "rank 8 is outside a world of 8" in proc.stderr
