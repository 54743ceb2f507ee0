"""A machine row's provider_ref is what the local liveness check and release read; the team's shared
state lets any teammate write it (and a crash or a hand edit can damage it). One such row must not
end `fleet status` with an internal error, nor keep `fleet down` from releasing the lease: its
machine directory is found by the lease's own name, as for a machine fleet never recorded."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest

from fleet.models import Lease, Machine, utcnow
from fleet.state import open_state
from tests.conftest import run_fleet


@pytest.mark.parametrize("ref", ["abc", [1], 5, {"sshd_pid": "abc"}, {"sshd_pid": [1]}])
def test_a_provider_ref_of_the_wrong_shape_is_one_gone_machine(fleet_home, tmp_path, ref):
    _planted_then_listed_and_released(fleet_home, tmp_path, ref)


def test_the_same_on_a_teams_postgresql(fleet_home, tmp_path, request, monkeypatch):
    monkeypatch.setenv("FLEET_STATE_URL", request.getfixturevalue("postgres_url"))
    _planted_then_listed_and_released(fleet_home, tmp_path, "abc")


def _planted_then_listed_and_released(fleet_home, tmp_path, ref):
    state = open_state()
    try:
        now = utcnow()
        machine = Machine(id="l-shape1-n0", lease_id="l-shape1", node_rank=0, host="127.0.0.1", port=1,
                          user="u", key_path="k", host_key="h", workdir="/w")
        state.save_lease(Lease(id="l-shape1", provider="local", template="local-1gpu", machines=[machine],
                               created_at=now, deadline=now + timedelta(minutes=5),
                               max_deadline=now + timedelta(hours=1), project="p", user="tester", status="active"))
        data = json.loads(state.db.execute("SELECT data FROM machines WHERE id = ?", ("l-shape1-n0",))[0]["data"])
        data["provider_ref"] = ref
        state.db.execute("UPDATE machines SET data = ? WHERE id = ?", (json.dumps(data), "l-shape1-n0"))
    finally:
        state.close()
    (fleet_home / "machines" / "l-shape1-n0").mkdir(parents=True)   # its directory, found by name at release
    for args in (["status"], ["status", "--json"], ["status", "--refresh"]):
        out = run_fleet(args, cwd=tmp_path)
        assert out.returncode == 0 and "internal error" not in out.stderr, (args, out.stderr)
        assert "l-shape1" in out.stdout and "gone" in out.stdout
    down = run_fleet(["down", "l-shape1"], cwd=tmp_path)
    assert down.returncode == 0 and "released 1: l-shape1" in down.stdout, down.stderr
    assert not (fleet_home / "machines" / "l-shape1-n0").exists()
