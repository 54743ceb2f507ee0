"""`fleet snapshot rm` as typed: names go, unreferenced snapshots go and `gc` frees their chunks, but
a snapshot a run record references keeps its manifest and chunks, so a rerun stays possible."""
from __future__ import annotations

import json

from tests.conftest import run_fleet


def _chunks(store):
    return {p.name for p in (store / "chunks").rglob("*") if p.is_file()}


def test_rm_drops_names_gc_frees_only_unreferenced(fleet_home, tmp_path):
    store = fleet_home / "store"
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "shared.txt").write_text("in both\n")
    (tmp_path / "a" / "only-a.txt").write_text("only in a\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "shared.txt").write_text("in both\n")
    (tmp_path / "b" / "only-b.txt").write_text("only in b\n")
    a = json.loads(run_fleet(["snapshot", "create", str(tmp_path / "a"), "--name", "train-a", "--json"],
                             cwd=tmp_path).stdout)["id"]
    b = json.loads(run_fleet(["snapshot", "create", str(tmp_path / "b"), "--name", "train-b", "--json"],
                             cwd=tmp_path).stdout)["id"]
    run_fleet(["snapshot", "create", str(tmp_path / "b"), "--name", "b-alias"], cwd=tmp_path)
    # A run pinned snapshot b.
    from fleet.records.chain import RunRecord, append_record
    append_record(RunRecord(run_id="r-pinned", command="train", data_snapshots={"train": b}, store=str(store)))
    before = _chunks(store)

    out = run_fleet(["snapshot", "rm", "train-a"], cwd=tmp_path)
    assert out.returncode == 0 and f"snapshot {a[:12]} removed" in out.stdout
    out = run_fleet(["snapshot", "rm", b[:10], "--json"], cwd=tmp_path)       # an id prefix: every name
    res = json.loads(out.stdout)
    assert sorted(res["names_removed"]) == ["b-alias", "train-b"]
    assert res["manifest_removed"] is False and res["kept_for_runs"] == ["r-pinned"]
    listed = json.loads(run_fleet(["snapshot", "ls", "--json"], cwd=tmp_path).stdout)["snapshots"]
    assert [(r["id"], r["names"]) for r in listed] == [(b, [])]

    gc = json.loads(run_fleet(["snapshot", "gc", "--grace", "0", "--json"], cwd=tmp_path).stdout)
    assert gc["deleted_chunks"] == 1                                    # only-a.txt's chunk
    assert len(before - _chunks(store)) == 1
    ok = run_fleet(["snapshot", "verify", b], cwd=tmp_path)              # the pinned run can still rerun
    assert ok.returncode == 0, ok.stderr
    audit = run_fleet(["audit", "--verify"], cwd=tmp_path)
    assert audit.returncode == 0, audit.stderr

    gone = run_fleet(["snapshot", "rm", "train-a"], cwd=tmp_path)
    assert gone.returncode != 0 and gone.stderr.count("fleet: error:") == 1 and "train-a" in gone.stderr
