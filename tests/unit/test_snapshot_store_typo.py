"""`fleet snapshot ls --store /data/snapshtos` (a typo) created that directory as a new, empty store
and answered "no snapshots", exit 0; show, verify, rm and gc did the same. The reading commands now
say there is no store there (exit 4) and create nothing; `snapshot create` still makes a new store."""
from __future__ import annotations

import json

import pytest

from tests.conftest import run_fleet


@pytest.mark.parametrize("args", [["ls"], ["ls", "--json"], ["show", "x"], ["verify"], ["rm", "x"], ["gc"],
                                  ["diff", "a", "b"]])
def test_a_reading_command_does_not_make_a_store_out_of_a_typo(tmp_path, fleet_home, args):
    typo = tmp_path / "snapshtos"
    proc = run_fleet(["snapshot", *args, "--store", str(typo)], cwd=tmp_path)
    assert proc.returncode == 4 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [f"fleet: error: {typo}: no snapshot store there "
                                                "(check --store (or `store` in fleet.toml))"]
    assert not typo.exists()


def test_create_still_makes_a_new_store_and_ls_then_reads_it(tmp_path, fleet_home):
    store = tmp_path / "new-store"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f").write_text("x")
    assert run_fleet(["snapshot", "create", str(tmp_path / "data"), "--name", "d", "--store", str(store)],
                     cwd=tmp_path).returncode == 0
    listed = run_fleet(["snapshot", "ls", "--json", "--store", f"file://{store}"], cwd=tmp_path)
    assert listed.returncode == 0 and [s["names"] for s in json.loads(listed.stdout)["snapshots"]] == [["d"]]


@pytest.mark.parametrize("args", [["gc"], ["ls", "--json"], ["verify"]])
def test_a_directory_that_is_not_a_store_is_refused_and_left_alone(tmp_path, fleet_home, args):
    """`fleet snapshot gc --store /` took / for a store: it made chunks/ manifests/ refs/ locks/ format
    there, and its clean-up of the store's tmp/ removed every file older than an hour in /tmp. A
    directory that holds other files and no manifests/ is now refused, read or written, untouched."""
    import os
    import time
    other = tmp_path / "home"
    (other / "tmp").mkdir(parents=True)
    old = other / "tmp" / "someone-elses-file"
    old.write_text("keep me")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    before = sorted(p.name for p in other.iterdir())
    proc = run_fleet(["snapshot", *args, "--store", str(other)], cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"fleet: error: {other}: not a snapshot store (it holds other files, no manifests/) (check --store (or "
        "`store` in fleet.toml); a new store needs an empty directory)"]
    assert sorted(p.name for p in other.iterdir()) == before and old.read_text() == "keep me"


def test_create_refuses_a_directory_of_other_files_too(tmp_path, fleet_home):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f").write_text("x")
    other = tmp_path / "home"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    proc = run_fleet(["snapshot", "create", str(tmp_path / "data"), "--store", str(other)], cwd=tmp_path)
    assert proc.returncode == 2 and sorted(p.name for p in other.iterdir()) == ["notes.txt"]
