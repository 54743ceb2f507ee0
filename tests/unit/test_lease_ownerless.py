"""A lease row with no owner recorded (damaged, or planted by anyone who can write the team's
state) was extended and run on by whoever asked: the owner check read "" as "anyone's", so the
extension and the run were billed to no one's budget. Now no one may spend it; anyone may still end
it (`fleet down`), so its machines are not left running."""
from __future__ import annotations

import hashlib
import pytest

from fleet.ids import new_lease_id
from fleet.plan import make_plan
from fleet.providers.fake import FakeProvider
from fleet.run.resume_attempt import resume_of
from fleet.errors import UsageError
from fleet.snapshots import open_store
from fleet.state import open_state
from tests.conftest import run_fleet


@pytest.fixture(params=["sqlite", "postgresql"])
def team_state(request, fleet_home, monkeypatch):
    if request.param == "postgresql":
        monkeypatch.setenv("FLEET_STATE_URL", request.getfixturevalue("postgres_url"))
    state = open_state()
    yield state
    state.close()


@pytest.mark.parametrize("owner", ["", "   "])
def test_no_one_extends_or_runs_on_an_ownerless_lease_and_anyone_ends_it(team_state, tmp_path, owner):
    provider = FakeProvider()
    plan = make_plan(provider="fake", template=next(iter(provider.templates().values())), gpus=None,
                     max_duration_s=3600, heartbeat_ttl_s=600, project="p", user="tester")
    lease = provider.lease(plan, new_lease_id(), 600)
    team_state.save_lease(lease)
    team_state.db.execute("UPDATE leases SET owner = ? WHERE id = ?", (owner, lease.id))
    deadline = team_state.get_lease(lease.id).deadline
    for who in ("tester", "bob"):          # the one who made it, and a teammate
        for argv, action in ((["extend", lease.id, "10m"], "extend it"),
                             (["run", lease.id, "--", "echo", "ran-anyway"], "run on it")):
            refused = run_fleet(argv, cwd=tmp_path, env={"FLEET_USER": who})
            lines = refused.stderr.strip().splitlines()
            assert refused.returncode == 2 and len(lines) == 1, refused.stderr
            assert f"lease {lease.id} has no owner recorded: not allowed to {action}" in lines[0]
            assert f"`fleet down {lease.id}` releases it" in lines[0] and "ran-anyway" not in refused.stdout
    assert team_state.get_lease(lease.id).deadline == deadline
    assert team_state.list_runs(lease_id=lease.id, limit=10) == []
    ended = run_fleet(["down", lease.id], cwd=tmp_path, env={"FLEET_USER": "bob"})
    assert ended.returncode == 0, ended.stderr
    assert team_state.lease_status(lease.id)[0] == "released"
    assert {m.state for m in provider.describe(lease)} == {"gone"}


def test_no_one_resumes_a_run_with_no_owner_recorded(team_state, tmp_path, monkeypatch):
    store = open_store(str(tmp_path / "store"))
    manifest = b'{"entries":[],"format":3}'
    sid = hashlib.sha256(manifest).hexdigest()
    store.put_manifest(sid, manifest)
    store.set_ref("ckpt-r-1-n0", sid)
    team_state.create_run("r-1", lease_id=None, project="p", user="tester", command="c", log_path="l",
                          output_dir="o")
    team_state.finish_run("r-1", "cancelled", 130, {"summary": {"checkpoints": {"0": sid}}})
    team_state.db.execute("UPDATE runs SET owner = '' WHERE id = 'r-1'")
    with pytest.raises(UsageError, match="run r-1 has no owner recorded: not allowed to resume it"):
        resume_of(team_state, store, "r-1")
    assert resume_of(team_state, store, "r-1", check_owner=False).snapshots == {0: sid}   # its supervisor
