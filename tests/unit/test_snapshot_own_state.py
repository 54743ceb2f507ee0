"""A FLEET_HOME inside the directory being snapshotted (an experiment that is not a git repository,
FLEET_HOME=$PWD/fh): its state.db, store and caches went into every snapshot and onto every machine,
and the store wrote itself into itself, a new snapshot every run."""
from __future__ import annotations

from fleet.snapshots import create_snapshot, open_store


def test_fleet_home_and_the_store_inside_the_tree_are_never_snapshotted(tmp_path, monkeypatch):
    exp = tmp_path / "exp"
    (exp / "src").mkdir(parents=True)
    (exp / "src" / "train.py").write_text("print(1)\n")
    monkeypatch.setenv("FLEET_HOME", str(exp / "fh"))
    (exp / "fh").mkdir()
    (exp / "fh" / "state.db").write_bytes(b"runs and ledger")
    store = open_store(str(exp / "store"))
    first = create_snapshot(exp, store)
    assert sorted(e.path for e in first.manifest.files()) == ["src/train.py"]
    again = create_snapshot(exp, store)            # the store grew in between: still the same snapshot
    assert again.id == first.id
