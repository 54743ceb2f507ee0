"""A snapshot store damaged by hand (a directory where a name or manifest file belongs, a name file
that is not text): each snapshot command says which path is wrong in one line, never `internal
error: IsADirectoryError` (a listing leaves a damaged name out); a name that is not text reads as a
name pointing nowhere."""
from __future__ import annotations

import json

import pytest

from tests.conftest import run_fleet


@pytest.fixture
def store(tmp_path, fleet_home):
    data = tmp_path / "d"
    data.mkdir()
    (data / "a.txt").write_text("a\n")
    made = run_fleet(["snapshot", "create", str(data), "--name", "good"], cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    return fleet_home / "store"


def _one_error(proc) -> str:
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("fleet: error:")]
    assert proc.returncode != 0 and len(errors) == 1, proc.stderr
    return errors[0]


@pytest.mark.parametrize("argv", [["snapshot", "show", "good"], ["snapshot", "rm", "good"]])
def test_a_directory_where_a_name_file_belongs_is_named(store, tmp_path, argv):
    (store / "refs" / "good").unlink()
    (store / "refs" / "good").mkdir()
    error = _one_error(run_fleet(argv, cwd=tmp_path))
    assert "snapshot name 'good'" in error and "is not a name file" in error and str(store / "refs" / "good") in error


def test_a_directory_where_a_name_file_belongs_leaves_the_listing_to_the_rest(store, tmp_path):
    """A shared store's refs/ is every writer's: one planted entry is no name, not the end of `ls`."""
    (store / "refs" / "good").unlink()
    (store / "refs" / "good").mkdir()
    listing = run_fleet(["snapshot", "ls", "--json"], cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    [row] = json.loads(listing.stdout)["snapshots"]
    assert row["names"] == []


def test_a_directory_where_a_manifest_belongs_is_named(store, tmp_path):
    """`verify` names it among its problems and fails; `ls` lists it as damaged, naming the path, as it lists any
    damaged manifest (manifests/ of a shared store is every writer's: one entry is not the end of `ls`)."""
    [manifest] = (store / "manifests").iterdir()
    manifest.unlink()
    manifest.mkdir()
    verify = run_fleet(["snapshot", "verify"], cwd=tmp_path)
    assert "1 problem(s)" in _one_error(verify) and str(manifest) in verify.stderr, verify.stderr
    listing = run_fleet(["snapshot", "ls"], cwd=tmp_path)
    assert listing.returncode == 0 and "internal error" not in listing.stderr, listing.stderr
    [row] = [line for line in listing.stdout.splitlines() if manifest.name[:12] in line]
    assert "DAMAGED" in row and str(manifest) in row, listing.stdout


def test_a_name_file_that_is_not_text_points_nowhere(store, tmp_path):
    (store / "refs" / "good").write_bytes(b"\xff\xfe")
    listing = run_fleet(["snapshot", "ls", "--json"], cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "not a snapshot id" in _one_error(run_fleet(["snapshot", "show", "good"], cwd=tmp_path))


@pytest.mark.parametrize("toml", ['store = "x"\n[oops', "store = 5\n"])
@pytest.mark.parametrize("argv", [["snapshot", "ls"], ["snapshot", "gc"], ["snapshot", "create", "d"]])
def test_a_fleet_toml_that_does_not_parse_is_refused_not_read_as_no_store(store, tmp_path, toml, argv):
    (tmp_path / "fleet.toml").write_text(toml)
    error = _one_error(run_fleet(argv, cwd=tmp_path))
    assert "fleet.toml" in error and "store" in error, error
    chosen = run_fleet([*argv, "--store", str(store)], cwd=tmp_path)     # --store says which: no need to read it
    assert chosen.returncode == 0, chosen.stderr
