"""A detached run's supervisor resumes what its launcher was allowed to resume: on node 0 it runs as
another login with no FLEET_USER of the laptop's, so the owner check is the launcher's alone
(review finding: `fleet up -d --resume RUN` was refused on node 0 as "not fleet-supervisor's")."""
from __future__ import annotations

import hashlib

import pytest

from fleet.errors import UsageError
from fleet.run.resume_attempt import resume_of
from fleet.snapshots import open_store
from fleet.state import open_state


def test_the_owner_check_is_the_launchers_and_the_supervisor_skips_it(fleet_home, tmp_path, monkeypatch):
    state = open_state()
    store = open_store(str(tmp_path / "store"))
    manifest = b'{"entries":[],"format":3}'
    sid = hashlib.sha256(manifest).hexdigest()
    store.put_manifest(sid, manifest)
    store.set_ref("ckpt-r-1-n0", sid)
    state.create_run("r-1", lease_id=None, project="p", user="alice", command="c", log_path="l", output_dir="o")
    state.finish_run("r-1", "cancelled", 130, {"summary": {"checkpoints": {"0": sid}}})
    monkeypatch.setenv("FLEET_USER", "fleet-supervisor")
    with pytest.raises(UsageError, match="run r-1 is alice's, not fleet-supervisor's"):
        resume_of(state, store, "r-1")
    assert resume_of(state, store, "r-1", check_owner=False).snapshots == {0: sid}
    state.close()
