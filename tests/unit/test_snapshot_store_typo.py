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
    assert proc.stderr.strip().splitlines() == [f"fleet: error: no snapshot store at {typo} "
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
