"""[data] sources beyond local paths: an S3 prefix snapshotted in place (listing by ETag/size, the
machine fetches the objects itself) and a named snapshot already in the store."""
from __future__ import annotations

import os

import boto3
import pytest

from fleet.errors import IntegrityError, NotFound, UsageError
from fleet.snapshots import create_snapshot, open_store
from fleet.snapshots.sources import pin_data, recheck
from fleet.snapshots.sync import Target, sync_lease
from fleet.snapshots.sync_remote import data_dir


@pytest.fixture
def bucket(aws_env):
    s3 = boto3.client("s3", endpoint_url=aws_env)
    s3.create_bucket(Bucket="raw-data")
    s3.put_object(Bucket="raw-data", Key="train/a.csv", Body=b"1,2\n3,4\n")
    s3.put_object(Bucket="raw-data", Key="train/sub/b.bin", Body=os.urandom(300_000))
    s3.put_object(Bucket="raw-data", Key="other/c.txt", Body=b"not in the prefix")
    return s3


def test_s3_prefix_is_pinned_by_listing_and_fetched_by_the_machine(fleet_home, local_lease, tmp_path, bucket):
    store = open_store(None)
    data = {"train": "s3://raw-data/train"}
    pins, sources = pin_data(data, tmp_path, store)
    sid = pins["train"]
    lease = local_lease(gpus=2)
    stats = sync_lease(lease.machines, store, lambda m: [Target(data_dir(m, "train"), [sid], read_only=True)],
                       sources=sources)
    assert sum(s.bytes_sent for s in stats) == 0                       # nothing through the controller
    assert sum(s.bytes_objects for s in stats) == 2 * (300_000 + 8)    # each machine pulled the objects
    body = bucket.get_object(Bucket="raw-data", Key="train/sub/b.bin")["Body"].read()
    for m in lease.machines:
        d = data_dir(m, "train")
        assert sorted(os.listdir(d)) == ["a.csv", "sub"]
        assert open(f"{d}/a.csv", "rb").read() == b"1,2\n3,4\n" and open(f"{d}/sub/b.bin", "rb").read() == body
    again = sync_lease(lease.machines, store, lambda m: [Target(data_dir(m, "train"), [sid], read_only=True)],
                       sources=sources)
    assert all(s.targets_current for s in again) and sum(s.bytes_objects for s in again) == 0
    assert recheck(data, pins, "r-1")                                   # unchanged: a rerun may go on
    bucket.put_object(Bucket="raw-data", Key="train/a.csv", Body=b"1,2\n3,5\n")   # same size, new content
    assert pin_data(data, tmp_path, store)[0]["train"] != sid
    with pytest.raises(IntegrityError, match=r"cannot rerun r-1: data train \(s3://raw-data/train\) changed"):
        recheck(data, pins, "r-1")


def test_named_snapshot_and_id_sources(fleet_home, tmp_path):
    store = open_store(None)
    src = tmp_path / "d"
    src.mkdir()
    (src / "x.txt").write_text("x\n")
    snap = create_snapshot(src, store, name="train-v3")
    pins, sources = pin_data({"a": "snapshot:train-v3", "b": snap.id, "c": f"snapshot:{snap.id[:10]}"}, tmp_path,
                             store)
    assert pins == {"a": snap.id, "b": snap.id, "c": snap.id} and sources == {}
    with pytest.raises(NotFound, match="train-v4"):
        pin_data({"a": "snapshot:train-v4"}, tmp_path, store)
    with pytest.raises(UsageError, match="no such file or directory"):
        pin_data({"a": "missing-dir"}, tmp_path, store)


def test_the_experiment_directory_as_data_leaves_out_the_runs_fleet_brings_home(fleet_home, tmp_path):
    store = open_store(None)
    exp = tmp_path / "exp"
    (exp / "runs" / "r-1" / "rank-0").mkdir(parents=True)
    (exp / "runs" / "r-1" / "rank-0" / "metrics.json").write_text("{}")
    (exp / "data").mkdir()
    (exp / "data" / "runs").mkdir()                      # a data directory that happens to be called runs
    (exp / "data" / "runs" / "keep.csv").write_text("1\n")
    (exp / "train.csv").write_text("1,2\n")
    pins, _ = pin_data({"all": "."}, exp, store)
    from fleet.snapshots.manifest import Manifest
    paths = {e.path for e in Manifest.from_bytes(store.get_manifest(pins["all"])).entries}
    assert "train.csv" in paths and "data/runs/keep.csv" in paths
    assert not any(p == "runs" or p.startswith("runs/") for p in paths), paths
    # A new run's outputs do not make a new data snapshot.
    (exp / "runs" / "r-2").mkdir()
    (exp / "runs" / "r-2" / "out.bin").write_bytes(b"x" * 100)
    assert pin_data({"all": "."}, exp, store)[0] == pins
    # Data inside runs/ (a previous run's outputs) is taken as it is.
    inner, _ = pin_data({"prev": "runs/r-1"}, exp, store)
    assert {e.path for e in Manifest.from_bytes(store.get_manifest(inner["prev"])).entries} >= {"rank-0/metrics.json"}


def test_data_that_holds_credential_files_is_said_in_a_warning(fleet_home, experiment):
    """The code pin names a .env it takes along; `[data] all = "."` took the experiment's git-ignored
    .env into the store and onto every machine without a word."""
    import subprocess

    from tests.conftest import run_fleet
    (experiment / ".gitignore").write_text(".env\nruns/\n")
    (experiment / ".env").write_text("WANDB_API_KEY=abc123\n")
    with open(experiment / "fleet.toml", "a") as fh:
        fh.write('[data]\nall = "."\n')
    for args in (["init", "-q"], ["add", "fleet.toml", ".gitignore"],
                 ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "exp"]):
        subprocess.run(["git", *args], cwd=experiment, check=True)
    done = run_fleet(["up", "--gpus", "1"], cwd=experiment)
    assert done.returncode == 0, done.stderr
    assert ("fleet: warning: [data] all: files that usually keep credentials (.env), now in the store and on "
            "every machine: move them out of the data directory") in done.stderr, done.stderr


def test_audit_checks_an_s3_source_by_listing_it_again(fleet_home, experiment, aws_env):
    """An S3 prefix is pinned by its listing, which names no snapshot in the store: `audit --verify`
    failed every run that had one ("no snapshot … in the store"), intact or not."""
    import json

    from tests.conftest import run_fleet
    s3 = boto3.client("s3", endpoint_url=aws_env)
    s3.create_bucket(Bucket="raw")
    s3.put_object(Bucket="raw", Key="ds/a.csv", Body=b"1,2\n")
    with open(experiment / "fleet.toml", "a") as fh:
        fh.write('[data]\nraw = "s3://raw/ds"\n')
    up = run_fleet(["up", "--gpus", "1", "--json", "--", "sh", "-c", "cat $FLEET_DATA/raw/a.csv"], cwd=experiment)
    assert up.returncode == 0 and "1,2" in up.stderr, up.stderr
    run_id = json.loads(up.stdout)["run_id"]
    verified = run_fleet(["audit", "--verify"], cwd=experiment)
    assert verified.returncode == 0, verified.stderr
    assert run_fleet(["audit", run_id], cwd=experiment).returncode == 0
    s3.put_object(Bucket="raw", Key="ds/a.csv", Body=b"9,9\n")        # the data the run read is gone
    changed = run_fleet(["audit", "--verify"], cwd=experiment)
    assert changed.returncode == 5, changed.stderr
    assert f"fleet: error: run {run_id} data:raw: s3://raw/ds changed since the run" in changed.stderr
