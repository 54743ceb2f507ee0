"""`fleet down` and detached runs after recovery, against stale, damaged and forged state: a run id
whose random part reads like an attempt, a command line that merely contains the run id, a
next-attempt chain that leads into another user's lease or loops, a supervisor between attempts
that `down --all` must stop, and a damaged controller record that must not crash `down --all`."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from fleet import leases
from fleet.ids import new_lease_id, split_attempt
from fleet.lost_runs import _start_ticks, controller_alive, controller_identity
from fleet.plan import make_plan
from fleet.providers.fake import FakeProvider
from fleet.run import detach
from fleet.run.supervisor import IDENTITY, MODULE, supervisors_root
from fleet.state import open_state

from tests.unit.test_detach_stop_other_user import _Warnings


@pytest.mark.parametrize("run_id, split", [
    ("r-20261204-190323-a123456789", ("r-20261204-190323-a123456789", 1)),   # a random token, not attempt 123456789
    ("r-20261204-190323-0a1b2c3d4e-a2", ("r-20261204-190323-0a1b2c3d4e", 2)),
    ("r-x-a101", ("r-x", 101)),
    ("r-x-a1", ("r-x-a1", 1)), ("r-x-a0", ("r-x-a0", 1)), ("r-x-a02", ("r-x-a02", 1)), ("r-x-a\u00b2", ("r-x-a\u00b2", 1)),
])
def test_only_a_bounded_attempt_suffix_is_an_attempt(run_id, split):
    assert split_attempt(run_id) == split


def _fake_supervisor(spec_path: str) -> tuple[subprocess.Popen, dict]:
    """A process whose command line reads like a supervisor's, and its recorded identity."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "-m", MODULE, spec_path])
    for _ in range(1000):     # until it has exec'd (before, /proc shows the forking pytest's command line)
        try:
            with open(f"/proc/{proc.pid}/cmdline", "rb") as fh:
                if spec_path.encode() in fh.read():
                    break
        except OSError:
            pass
        time.sleep(0.01)
    return proc, {**controller_identity(), "pid": proc.pid, "start": _start_ticks(proc.pid)}


def test_a_supervisor_is_proved_by_its_run_directory_not_a_substring(fleet_home):
    proc, ident = _fake_supervisor(str(supervisors_root() / "r-20261204-190323-0a1b2c3d4e" / "spec.json"))
    try:
        assert detach.is_supervisor(ident, "r-20261204-190323-0a1b2c3d4e") is True
        assert detach.is_supervisor(ident, "r-20261204-190323-0a1b2c3d4e-a3") is True   # its later attempt
        for other in ("r-2", "spec", "r-20261204-190323-0a1b2c3d4", "supervisors"):
            assert detach.is_supervisor(ident, other) is False, other
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("ident", ["garbage", {"boot_id": "x", "pid": "12"}, {"boot_id": "x", "pid": -1},
                                   {"boot_id": "x", "pid": True}, ["pid", 1]])
def test_a_damaged_controller_record_proves_nothing(ident):
    assert controller_alive(ident) is None


def _lease(state, user: str = "tester") -> str:
    provider = FakeProvider()
    plan = make_plan(provider="fake", template=next(iter(provider.templates().values())), gpus=None,
                     max_duration_s=600, heartbeat_ttl_s=300, project="p", user=user)
    lease = provider.lease(plan, new_lease_id(), 300)
    state.save_lease(lease)
    return lease.id


def _run(state, run_id: str, lease_id: str, status: str, user: str = "tester", **meta) -> None:
    state.create_run(run_id, lease_id=lease_id, project="p", user=user, command="train", log_path="",
                     output_dir="", meta={"detached": True, **meta})
    if status != "running":
        state.finish_run(run_id, status, None, {})


def test_down_does_not_follow_a_chain_into_another_users_lease_or_round_a_loop(fleet_home):
    state = open_state()
    first, theirs = _lease(state), _lease(state, user="bob")
    state.set_lease_status(first, "released")
    _run(state, "r-a-1", first, "error", next_attempt="r-a-1-a2")
    _run(state, "r-a-1-a2", theirs, "running", user="bob")          # forged: bob's run on bob's lease
    _run(state, "r-b-1", first, "error", next_attempt="r-b-1-a2")
    _run(state, "r-b-1-a2", first, "error", next_attempt="r-b-1")    # a loop back to the start
    events = _Warnings()
    assert leases.down([first], state=state, events=events) == []
    assert state.lease_status(theirs)[0] == "active"


def _supervised_run_on_a_released_lease(run_id: str):
    """(state, released lease, the supervisor process, its identity): the supervisor's directory
    and identity.json written as fleet writes them; the run's row is the test's to add."""
    import json
    state = open_state()
    gone = _lease(state)
    state.set_lease_status(gone, "released")
    directory = supervisors_root() / run_id
    directory.mkdir(parents=True)
    proc, ident = _fake_supervisor(str(directory / "spec.json"))
    (directory / IDENTITY).write_text(json.dumps(ident))
    return state, gone, proc, ident


def test_down_all_stops_a_supervisor_between_two_attempts_and_survives_damaged_rows(fleet_home):
    run_id = "r-20261204-190323-0a1b2c3d4e"
    state, gone, proc, ident = _supervised_run_on_a_released_lease(run_id)
    elsewhere = supervisors_root() / "r-20261204-190324-1a1b2c3d4e"     # its run lives in another state
    elsewhere.mkdir()
    other, other_ident = _fake_supervisor(str(elsewhere / "spec.json"))
    try:
        import json
        (elsewhere / IDENTITY).write_text(json.dumps(other_ident))
        _run(state, run_id, gone, "error", controller=ident)        # attempt 1 lost; attempt 2 not leased yet
        live = _lease(state)
        _run(state, "r-damaged", live, "running", controller="garbage")
        released = leases.down([], all_leases=True, state=state, events=_Warnings(), user="tester")
        assert released[0] == live and state.lease_status(live)[0] == "released"
        assert proc.wait(timeout=10) is not None                     # asked to stop (SIGTERM): no attempt 2
        assert other.poll() is None, "a supervisor of another state's run was stopped"
    finally:
        for p in (proc, other):
            if p.poll() is None:
                p.kill()
            p.wait()


def test_down_all_stops_a_supervisor_whose_next_attempt_is_named_but_not_made_yet(fleet_home):
    """Recovery names the next attempt at once; its row appears only after plan, pin and budget.
    That supervisor was skipped (its chain ended in a missing row) and leased machines after
    `down --all` said everything was released."""
    run_id = "r-20261204-190325-2a1b2c3d4e"
    state, gone, proc, ident = _supervised_run_on_a_released_lease(run_id)
    try:
        _run(state, run_id, gone, "error", controller=ident, next_attempt=f"{run_id}-a2")
        leases.down([], all_leases=True, state=state, events=_Warnings(), user="tester")
        assert proc.wait(timeout=10) is not None
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
