"""manifests/ of a store on a shared path is every writer's, as refs/ is: a FIFO planted under a
snapshot id hung `fleet snapshot ls` (and `gc`, `verify`) for everyone, a link to /dev/zero filled
memory, a dangling link was `internal error: FileNotFoundError`, a directory stopped `ls`. Each is
now a damaged snapshot: listed as such, one line when asked for, never opened through."""
from __future__ import annotations

import json
import os

import pytest

from tests.conftest import run_fleet

pytestmark = pytest.mark.timeout(60)      # the old code hung on the FIFO
PLANTED = "b" * 64


def _plant(manifests, kind: str) -> None:
    where = manifests / PLANTED
    if kind == "fifo":
        os.mkfifo(where)
    elif kind == "dir":
        where.mkdir()
    elif kind == "dangling":
        os.symlink(manifests / "nowhere", where)
    else:
        os.symlink("/dev/zero", where)


@pytest.mark.parametrize("kind", ["fifo", "dir", "dangling", "zero"])
def test_a_planted_manifest_is_listed_damaged_and_named_in_one_line(tmp_path, fleet_home, kind):
    data = tmp_path / "d"
    data.mkdir()
    (data / "x").write_bytes(b"x")
    env = {"FLEET_HOME": str(fleet_home)}
    good = json.loads(run_fleet(["snapshot", "create", str(data), "--json"], cwd=tmp_path, env=env).stdout)["id"]
    _plant(fleet_home / "store" / "manifests", kind)
    listed = run_fleet(["snapshot", "ls", "--json"], cwd=tmp_path, env=env, timeout=20)
    assert listed.returncode == 0, listed.stderr
    rows = {r["id"]: r for r in json.loads(listed.stdout)["snapshots"]}
    assert "not a regular file" in rows[PLANTED]["damaged"] and rows[good]["files"] == 1
    shown = run_fleet(["snapshot", "show", PLANTED], cwd=tmp_path, env=env, timeout=20)
    assert shown.returncode != 0 and shown.stderr.count("\n") == 1
    said = f"no snapshot {PLANTED[:12]} in the store" if kind == "dangling" else \
        f"the manifest of snapshot {PLANTED[:12]} in the store {fleet_home / 'store'} is not a regular file"
    assert shown.stderr.startswith(f"fleet: error: {said}"), shown.stderr
