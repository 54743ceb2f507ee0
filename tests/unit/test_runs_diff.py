"""`fleet runs diff A B` through the CLI on records in a real state database and snapshots in a real
store: each concern (code, data, environment, parameters) names what changed and nothing else; bad
input is one line."""
from __future__ import annotations

import json

import pytest

from fleet.environment.model import Package, RunEnvironment
from fleet.records.chain import RunRecord, append_record
from fleet.snapshots import create_snapshot, open_store
from tests.conftest import run_fleet
from tests.unit.test_environment import machine_env


@pytest.fixture
def records(fleet_home, tmp_path):
    from fleet.state import open_state
    store = open_store(None)
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.csv").write_text("1,2\n")
    (data / "b.csv").write_text("3,4\n")
    first = create_snapshot(data, store).id
    (data / "b.csv").write_text("3,5\n")
    (data / "c.csv").write_text("new\n")
    second = create_snapshot(data, store).id
    env = RunEnvironment(machines=(machine_env(),), wheels_snapshot=None)
    newer = RunEnvironment(machines=(machine_env(packages=(Package("numpy", "2.0.0", "9" * 64),
                                                            Package("tinypkg", "1.0", "b" * 64))),))
    config = {"command": "python train.py", "setup": "pip install -r requirements.txt", "gpus": 8,
              "env": {"LR": "3e-4", "SEED": "1"}, "project": "p", "budget": "10"}
    db = open_state().db
    common = dict(project="p", code_commit="a" * 40, code_snapshot="c" * 64, store=store.url)
    append_record(RunRecord(run_id="r-a", command="python train.py", data_snapshots={"train": first},
                            config=config, environment=env.to_json(), **common), db)
    append_record(RunRecord(run_id="r-b", command="python train.py --epochs 3", data_snapshots={"train": second},
                            config=dict(config, env={"LR": "1e-3", "SEED": "1"}, budget="20"),
                            environment=newer.to_json(), **common), db)
    append_record(RunRecord(run_id="r-c", command="python train.py", data_snapshots={"train": first},
                            config=config, environment=env.to_json(), **common), db)
    append_record(RunRecord(run_id="r-d", command="python train.py", data_snapshots={"train": first},
                            config=config, environment=env.to_json(), code_dirty_snapshot=first,
                            **dict(common, code_commit="f" * 40)), db)
    return tmp_path


def test_each_concern_names_what_changed(records):
    done = run_fleet(["runs", "diff", "r-a", "r-b", "--json"], cwd=records)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    diff = got["differences"]
    assert got["identical"] is False and diff["code"] == []
    (data,) = diff["data"]
    assert data["area"] == "train" and data["item"] == "2 file(s) differ: +c.csv, ~b.csv"
    assert [(c["area"], c["item"], c["before"], c["after"]) for c in diff["environment"]] == [
        ("package", "numpy", "1.26.4 (sha256 aaaaaaaaaaaa)", "2.0.0 (sha256 999999999999)")]
    # The budget names no parameter of the experiment: not a difference.
    assert [(c["area"], c["item"], c["before"], c["after"]) for c in diff["parameters"]] == [
        ("command", "", "python train.py", "python train.py --epochs 3"), ("env", "LR", "3e-4", "1e-3")]


def test_text_markdown_and_identical(records):
    text = run_fleet(["runs", "diff", "r-a", "r-b"], cwd=records).stdout
    assert "environment  package numpy: 1.26.4 (sha256 aaaaaaaaaaaa) → 2.0.0 (sha256 999999999999)" in text
    md = run_fleet(["runs", "diff", "r-a", "r-b", "--md"], cwd=records).stdout
    assert md.startswith("# Run `r-a` → `r-b`") and "## Code\n\n- same" in md and "| env LR | changed |" in md
    same = run_fleet(["runs", "diff", "r-a", "r-c"], cwd=records)
    assert same.returncode == 0
    assert same.stdout.strip() == "runs r-a and r-c: no differences in code, data, environment or parameters"


def test_bad_input_is_one_line(records):
    missing = run_fleet(["runs", "diff", "r-a", "r-nope"], cwd=records)
    assert missing.returncode != 0 and missing.stdout == ""
    assert missing.stderr.count("fleet: error:") == 1 and "r-nope" in missing.stderr
    both = run_fleet(["runs", "diff", "r-a", "r-b", "--json", "--md"], cwd=records)
    assert both.returncode == 2 and "exclusive" in both.stderr


def test_runs_compare_shows_which_environment_each_run_had(records):
    done = run_fleet(["runs", "compare", "r-a", "r-b", "r-c", "--format", "json"], cwd=records)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    labels = {r["run_id"]: r["environment"] for r in got["runs"]}
    assert labels["r-a"] == labels["r-c"] != labels["r-b"]
    assert labels["r-a"].startswith("Debian GNU/Linux 12 (bookworm) / driver 550.54.15 / packages ")
    assert "environment" in got["differ"]


def test_code_changes_name_the_commit_and_the_uncommitted_files(records):
    got = json.loads(run_fleet(["runs", "diff", "r-b", "r-d", "--json"], cwd=records).stdout)["differences"]
    assert [(c["area"], c["before"], c["after"]) for c in got["code"]] == [
        ("commit", "a" * 40, "f" * 40), ("uncommitted diff", None, got["code"][1]["after"])]
    assert got["code"][1]["kind"] == "added"


def test_runs_resumed_from_other_checkpoints_differ(records):
    """Same code, data and command, resumed from another checkpoint: `runs diff` said the runs had no
    differences."""
    from fleet.state import open_state
    store = open_store(None)
    ckpt = records / "ckpt"
    ckpt.mkdir()
    (ckpt / "state.json").write_text('{"step": 3}')
    early = create_snapshot(ckpt, store).id
    (ckpt / "state.json").write_text('{"step": 9}')
    late = create_snapshot(ckpt, store).id
    a, c = (json.loads(run_fleet(["runs", "show", r, "--json"], cwd=records).stdout) for r in ("r-a", "r-c"))
    db = open_state().db
    for run_id, base, sid in (("r-e", a, early), ("r-f", c, late)):
        append_record(RunRecord(run_id=run_id, command=base["command"], project="p", code_commit=base["code_commit"],
                                code_snapshot=base["code_snapshot"], store=base["store"],
                                data_snapshots=base["data_snapshots"], config=base["config"],
                                environment=base["environment"], resumed_from="r-a",
                                resumed={"attempt": 2, "checkpoints": {"0": sid}}), db)
    done = run_fleet(["runs", "diff", "r-e", "r-f"], cwd=records)
    assert done.returncode == 0, done.stderr
    assert f"data         checkpoint of node 0 1 file(s) differ: ~state.json: {early[:12]} → {late[:12]}" \
        in done.stdout, done.stdout
