"""An emptied state database (`: > state.db`) is not quietly a new chain (red-team finding): the next
run used to start a new chain and overwrite the records anchor, after which `fleet audit --verify`
said "chain intact" and the loss left no trace. The anchor is now kept, the run says why, and the
audit keeps failing until the database is restored. (An emptied file is first refused in one line,
as damaged: the run after it is moved aside, as the line says, is the one that keeps the anchor.)"""
from __future__ import annotations

import json

import pytest

from tests.conftest import run_fleet

pytestmark = pytest.mark.timeout(180)


def test_a_run_after_the_database_was_emptied_keeps_the_anchor_and_the_audit_fails(experiment, fleet_home):
    first = run_fleet(["up", "-y", "--allow-dirty", "--json", "--", "true"], cwd=experiment)
    assert first.returncode == 0, first.stderr
    anchor = fleet_home / "records.tip"
    before = json.loads(anchor.read_text())
    (fleet_home / "state.db").write_bytes(b"")                      # emptied (or replaced by a blank one)
    refused = run_fleet(["up", "-y", "--allow-dirty", "--", "true"], cwd=experiment)
    assert refused.returncode == 3 and "is corrupt: the file is empty" in refused.stderr, refused.stderr
    (fleet_home / "state.db").rename(fleet_home / "state.db.corrupt")   # as the refusal says to
    second = run_fleet(["up", "-y", "--allow-dirty", "--", "true"], cwd=experiment)
    assert second.returncode == 0, second.stderr
    assert f"names record #{before['seq']} (run {before['run_id']}), which the database no longer holds" \
        in second.stderr, second.stderr
    assert json.loads(anchor.read_text()) == before
    audit = run_fleet(["audit", "--verify"], cwd=experiment)
    assert audit.returncode != 0 and before["run_id"] in audit.stdout + audit.stderr, audit.stdout + audit.stderr
