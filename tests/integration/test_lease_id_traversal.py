"""Lease ids are read back from the state, which a team shares (PostgreSQL: every teammate may
write it) and which `fleet reap` matches against EC2's fleet:lease tags. fleet joins a lease id
onto $FLEET_HOME/leases/ to delete the lease's key directory at release, so a row planted with the
id `../../victim` made the victim's next `fleet down --all` delete a directory outside FLEET_HOME
(here: a sibling of it). An id that is not a plain name is refused before it becomes a path."""
from __future__ import annotations

from datetime import timedelta

from fleet.models import Lease, utcnow
from fleet.state import open_state
from tests.conftest import run_fleet


def test_a_planted_lease_id_never_deletes_outside_fleet_home(fleet_home, tmp_path):
    victim = tmp_path / "victim"                       # fleet_home is tmp_path/fleet-home
    (victim / "keep").mkdir(parents=True)
    (victim / "keep" / "work.txt").write_text("a week of results")
    state = open_state()
    try:
        now = utcnow()
        state.save_lease(Lease(id="../../victim/keep", provider="local", template="local-1gpu", machines=[],
                               created_at=now, deadline=now + timedelta(minutes=5),
                               max_deadline=now + timedelta(hours=1), project="p", user="tester",
                               status="active"))
    finally:
        state.close()
    down = run_fleet(["down", "--all"], cwd=tmp_path)
    assert (victim / "keep" / "work.txt").read_text() == "a week of results", down.stderr
    assert "Traceback" not in down.stderr


def _plant_machine_row(lease_id: str, directory) -> None:
    """A live lease row whose one machine names `directory` as its own (a teammate's UPDATE)."""
    from fleet.models import Machine
    state = open_state()
    try:
        now = utcnow()
        machine = Machine(id=f"{lease_id}-n0", lease_id=lease_id, node_rank=0, host="127.0.0.1", port=1,
                          user="u", key_path="k", host_key="h", workdir="/w", provider_ref={"dir": str(directory)})
        state.save_lease(Lease(id=lease_id, provider="local", template="local-1gpu", machines=[machine],
                               created_at=now, deadline=now + timedelta(minutes=5),
                               max_deadline=now + timedelta(hours=1), project="p", user="tester", status="active"))
    finally:
        state.close()


def test_a_planted_machine_directory_is_neither_stopped_nor_deleted(fleet_home, tmp_path):
    victim = tmp_path / "project"
    victim.mkdir()
    (victim / "train.py").write_text("print('mine')")
    _plant_machine_row("l-planted1", victim)
    down = run_fleet(["down", "--all"], cwd=tmp_path)
    assert (victim / "train.py").read_text() == "print('mine')", down.stderr
    assert "not stopping or deleting it" in down.stderr and "Traceback" not in down.stderr, down.stderr


def test_a_row_naming_another_machines_directory_does_not_end_that_machine(fleet_home, tmp_path):
    """Review finding: a machine row of lease B whose directory was lease A's machine (in the same
    machines/) got A's machine stopped and deleted when B was released."""
    other = fleet_home / "machines" / "l-othera1-n0"
    other.mkdir(parents=True)
    (other / "keep.txt").write_text("lease A's")
    _plant_machine_row("l-planted2", other)
    down = run_fleet(["down", "l-planted2"], cwd=tmp_path)
    assert (other / "keep.txt").read_text() == "lease A's", down.stderr
    assert "is another lease's: not stopping or deleting it" in down.stderr and "Traceback" not in down.stderr
