"""Which leases `fleet reap` judges when a detached run's supervisor is gone (fleet/run/reap_silent.py):
those of a provider that declares `ReleasedFromAnywhere` and that this computer can release; a lease
whose host keys are not here, or of a provider that does not declare it, is left alone with one
line saying why. --dry-run changes nothing."""
from __future__ import annotations

import subprocess
from datetime import timedelta

from fleet.lost_runs import controller_identity
from fleet.models import Lease, Machine, utcnow


def _dead_controller() -> dict:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return {**controller_identity(), "pid": proc.pid}   # same computer, a pid that has exited: provably gone


def _lease(state, lease_id: str, provider: str, key: str) -> None:
    now = utcnow()
    machine = Machine(id=f"{lease_id}-n0", lease_id=lease_id, node_rank=0, host="127.0.0.1", port=22, user="u",
                      key_path=key, host_key="", workdir=f"/w/{lease_id}", provider_ref={"host": "ha"})
    state.save_lease(Lease(id=lease_id, provider=provider, template="t", machines=[machine], created_at=now,
                           deadline=now + timedelta(minutes=5), max_deadline=now + timedelta(minutes=10),
                           user="tester"))
    state.create_run(f"r-{lease_id}", lease_id=lease_id, project="p", user="tester", command="train",
                     log_path="l", output_dir="o", meta={"detached": True, "controller": _dead_controller()})


def test_only_leases_this_computer_can_release_are_judged_the_others_say_why(fleet_home, tmp_path):
    from fleet.run.reap_silent import reap_silent, silent_runs
    from fleet.state import open_state
    key = tmp_path / "id_ed25519"
    key.write_text("key")
    state = open_state()
    _lease(state, "l-hosts", "ssh", str(key))
    _lease(state, "l-nokey", "ssh", str(tmp_path / "elsewhere" / "id_ed25519"))
    _lease(state, "l-local", "local", str(key))
    found, left = silent_runs(state, None)
    assert [r["lease_id"] for r in found] == ["l-hosts"]
    assert len(left) == 2, left
    nokey = next(line for line in left if line.startswith("lease l-nokey "))
    assert "its supervisor (pid" in nokey and "is gone" in nokey, nokey
    assert f"the key to host ha ({tmp_path / 'elsewhere' / 'id_ed25519'}) is not on this computer" in nokey, nokey
    local = next(line for line in left if line.startswith("lease l-local "))
    assert local.endswith("left alone: `fleet reap` does not release local leases; `fleet down l-local` does"), local
    assert silent_runs(state, "someone-else") == ([], [])   # without --all-users: the caller's leases only

    dry = reap_silent(state, owner=None, caller="tester", state_url=None, dry_run=True)
    assert dry.released == ["l-hosts"] and dry.left == left
    [kept] = dry.resumed
    assert kept.line() == ("run r-l-hosts would stay lost, not resumed: its supervisor was neither on node 0 of "
                           "its lease nor on its cluster's login node (the reaper resumes only those): "
                           "`fleet up --resume r-l-hosts -d` resumes it")
    assert [lease.status for lease in state.list_leases(active_only=True)] == ["active"] * 3   # nothing changed
    assert {state.get_run(f"r-{x}")["status"] for x in ("l-hosts", "l-nokey", "l-local")} == {"running"}
