"""`fleet snapshot rm` then `gc` never takes a live run's data (a red-team finding): a run writes its
record only when it ends, so a run still going (or lost, and perhaps resumed by `fleet reap`) pinned
its snapshot only in its state row, which `rm` did not read; the manifest and then its chunks went."""
from __future__ import annotations

import json

import pytest

from tests.conftest import run_fleet


@pytest.mark.parametrize("status", ["running", "lost"])
def test_a_snapshot_a_live_run_pins_is_kept_by_rm_and_gc(tmp_path, fleet_home, status):
    data = tmp_path / "d1"
    data.mkdir()
    (data / "x.bin").write_bytes(b"x" * 300_000)
    env = {"FLEET_HOME": str(fleet_home)}
    created = json.loads(run_fleet(["snapshot", "create", str(data), "--name", "train-v2", "--json"], cwd=tmp_path,
                                   env=env).stdout)
    from fleet.state import open_state
    state = open_state()
    state.create_run("r-live2", lease_id="l-1", project="p", user="u", command="train", log_path="", output_dir="",
                     meta={"pins": {"data_snapshots": {"train": created["id"]}}})
    if status != "running":
        state.db.execute("UPDATE runs SET status = ? WHERE id = 'r-live2'", (status,))
    state.close()
    removed = run_fleet(["snapshot", "rm", "train-v2", "--json"], cwd=tmp_path, env=env)
    assert removed.returncode == 0, removed.stderr
    assert json.loads(removed.stdout)["kept_for_runs"] == ["r-live2"]
    assert run_fleet(["snapshot", "gc", "--grace", "0"], cwd=tmp_path, env=env).returncode == 0
    assert run_fleet(["snapshot", "verify", created["id"]], cwd=tmp_path, env=env).returncode == 0


def test_one_corrupt_manifest_is_listed_as_damaged_and_the_rest_still_listed(tmp_path, fleet_home):
    """A planted or damaged manifest (anyone may write a shared store) made `fleet snapshot ls` fail."""
    data = tmp_path / "d1"
    data.mkdir()
    (data / "x.bin").write_bytes(b"x" * 1000)
    env = {"FLEET_HOME": str(fleet_home)}
    created = json.loads(run_fleet(["snapshot", "create", str(data), "--json"], cwd=tmp_path, env=env).stdout)
    from fleet.snapshots import open_store
    store = open_store(None)
    (store.root / "manifests" / ("e" * 64)).write_text("garbage")
    listed = run_fleet(["snapshot", "ls", "--json"], cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    rows = {r["id"]: r for r in json.loads(listed.stdout)["snapshots"]}
    assert "corrupt" in rows["e" * 64]["damaged"] and rows[created["id"]]["files"] == 1
    table = run_fleet(["snapshot", "ls"], cwd=tmp_path, env=env)
    assert table.returncode == 0 and "DAMAGED" in table.stdout
