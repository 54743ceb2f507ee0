"""A manifest whose bytes match its id but whose numbers do not fit (1e400 is valid JSON: an infinite
float) or whose nesting is too deep to parse: anyone who can write a shared store can plant one. It is
a damaged snapshot, said in one line; it was `internal error: OverflowError` (or RecursionError) from
`snapshot ls`, `show`, `verify` and `gc` for every user of the store, and from every sync carrying it."""
from __future__ import annotations

import hashlib
import json

import pytest

from fleet.errors import IntegrityError
from fleet.snapshots import open_store
from fleet.snapshots.sync_manifests import Prepared
from tests.conftest import run_fleet

H = "a" * 64
BODIES = {
    "mode": '{"entries":[{"chunks":[],"mode":1e400,"path":"a","sha256":"","size":0,"type":"file"}],"format":3}',
    "size": '{"entries":[{"chunks":[],"mode":420,"path":"a","sha256":"","size":1e400,"type":"file"}],"format":3}',
    "chunk": '{"entries":[{"chunks":[["%s",1e400]],"mode":420,"path":"a","sha256":"%s","size":1,"type":"file"}],'
             '"format":3}' % (H, H),
    "nesting": '{"entries":[%s],"format":3}' % ("[" * 100_000 + "]" * 100_000),
}


def _plant(store, body: str) -> str:
    sid = hashlib.sha256(body.encode()).hexdigest()
    (store.root / "manifests" / sid).write_text(body)
    return sid


@pytest.mark.parametrize("kind", sorted(BODIES))
def test_a_manifest_that_does_not_parse_into_numbers_is_damaged_in_one_line(tmp_path, fleet_home, kind):
    data = tmp_path / "d"
    data.mkdir()
    (data / "x").write_bytes(b"x")
    env = {"FLEET_HOME": str(fleet_home)}
    good = json.loads(run_fleet(["snapshot", "create", str(data), "--json"], cwd=tmp_path, env=env).stdout)["id"]
    sid = _plant(open_store(None), BODIES[kind])
    listed = run_fleet(["snapshot", "ls", "--json"], cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    rows = {r["id"]: r for r in json.loads(listed.stdout)["snapshots"]}
    assert "unreadable" in rows[sid]["damaged"] and rows[good]["files"] == 1
    shown = run_fleet(["snapshot", "show", sid], cwd=tmp_path, env=env)
    assert shown.returncode != 0 and shown.stderr.count("\n") == 1
    assert shown.stderr.startswith(f"fleet: error: manifest {sid[:12]} is unreadable"), shown.stderr


def test_a_sync_carrying_a_too_deep_manifest_refuses_it_in_one_line(tmp_path, fleet_home):
    store = open_store(None)
    sid = _plant(store, BODIES["nesting"])
    with pytest.raises(IntegrityError, match=f"manifest {sid[:12]} is unreadable"):
        Prepared(store, {sid}).body(sid)
