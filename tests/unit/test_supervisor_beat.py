"""A detached run's supervisor beats in the state; a run whose supervisor on another computer (node 0,
a teammate's laptop) has fallen silent is shown as such by `fleet status`, and `fleet down` of its
lease ends it as `lost` with a record at once instead of waiting for the lease's deadline. A beat
that is fresh, or a supervisor that never beat (older fleet), changes nothing."""
from __future__ import annotations

import json

from fleet import leases
from fleet.ids import new_lease_id
from fleet.lease_status import status
from fleet.plan import make_plan
from fleet.providers.fake import FakeProvider
from fleet.run.supervisor_beat import STALE_BEATS, SupervisorBeat, base_run_id, beat_ages, supervisor_gone
from fleet.state import open_state
from fleet.status_table import status_table

ELSEWHERE = {"host": "node-0.elsewhere", "boot_id": "another-boot", "pid_ns": "pid:[1]", "pid": 4242,
             "start": "99"}


class _Events:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def phase(self, name: str, detail: str = "") -> None:
        pass

    def log(self, label: str, stream: str, line: str) -> None:
        pass

    def warn(self, message: str) -> None:
        self.warnings.append(message)


def _detached_run_elsewhere(state, run_id: str = "r-beat000001") -> tuple[str, str]:
    """A lease with a detached run whose supervisor is a process on another computer."""
    provider = FakeProvider()
    plan = make_plan(provider="fake", template=next(iter(provider.templates().values())), gpus=None,
                     max_duration_s=600, heartbeat_ttl_s=300, project="p", user="tester")
    lease = provider.lease(plan, new_lease_id(), 300)
    state.save_lease(lease)
    state.create_run(run_id, lease_id=lease.id, project="p", user="tester", command="train",
                     log_path="", output_dir="", meta={"detached": True})
    meta = {**state.get_run(run_id)["meta"], "controller": ELSEWHERE}
    state.db.execute("UPDATE runs SET meta = ? WHERE id = ?", (json.dumps(meta), run_id))
    return lease.id, run_id


def _silence(state, run_id: str, seconds: float) -> None:
    state.db.execute("UPDATE supervisor_beats SET beat_epoch = beat_epoch - ? WHERE run_id = ?",
                     (seconds, base_run_id(run_id)))


def test_attempts_share_their_runs_beat():
    assert base_run_id("r-20261202-1-ab12-a3") == "r-20261202-1-ab12"
    assert base_run_id("r-20261202-1-ab12") == "r-20261202-1-ab12"
    assert base_run_id("r-x-abc") == "r-x-abc"


def test_a_beat_is_written_by_the_states_clock_and_removed_when_the_supervisor_ends(fleet_home):
    state = open_state()
    beat = SupervisorBeat(state, "r-beat000001-a2", period_s=0.2).start()
    try:
        [(run_id, (age, period, _host, _pid))] = beat_ages(state, ["r-beat000001"]).items()
        assert run_id == "r-beat000001" and 0 <= age < 5 and period == 0.2
    finally:
        beat.stop()
    assert beat_ages(state, ["r-beat000001"]) == {}


def test_a_silent_supervisor_elsewhere_is_shown_gone_and_down_ends_its_run_as_lost(fleet_home):
    state = open_state()
    lease_id, run_id = _detached_run_elsewhere(state)
    beat = SupervisorBeat(state, run_id, period_s=1.0)
    beat._write()   # one beat, then it died: no thread, no stop()
    assert supervisor_gone(state, state.get_run(run_id)) is None   # fresh: it may well live
    [view] = status(state, check=False)
    assert "supervisor_gone" not in view["runs"][0]

    _silence(state, run_id, STALE_BEATS * 1.0 + 30)
    reason = supervisor_gone(state, state.get_run(run_id))
    assert reason and "pid" in reason and "not been heard from" in reason, reason
    [view] = status(state, check=False)
    assert view["runs"][0]["supervisor_gone"] == reason
    assert "supervisor gone" in "\n".join(" ".join(row.cells) for row in status_table([view]).rows)

    events = _Events()
    leases.down([lease_id], state=state, events=events)   # the lease's deadline is still ahead
    run = state.get_run(run_id)
    assert run["status"] == "lost", (run, events.warnings)
    assert "not been heard from" in run["meta"]["summary"]["message"]


def test_a_fresh_beat_keeps_down_from_ending_the_run_of_a_supervisor_elsewhere(fleet_home):
    state = open_state()
    lease_id, run_id = _detached_run_elsewhere(state)
    beat = SupervisorBeat(state, run_id, period_s=60.0)
    beat._write()
    events = _Events()
    leases.down([lease_id], state=state, events=events)
    assert state.get_run(run_id)["status"] == "running"    # its supervisor ends it itself
    assert any("may still be supervised" in w for w in events.warnings), events.warnings


def test_a_supervisor_that_never_beat_is_not_called_gone(fleet_home):
    state = open_state()
    _lease_id, run_id = _detached_run_elsewhere(state)
    assert supervisor_gone(state, state.get_run(run_id)) is None


def test_following_an_attempt_its_dead_supervisor_never_started_ends_saying_so(fleet_home):
    from fleet.run_logs import follow_logs
    state = open_state()
    _lease_id, run_id = _detached_run_elsewhere(state, "r-beat000002")
    beat = SupervisorBeat(state, run_id, period_s=1.0)
    beat._write()
    # Attempt 1 lost its machines and named attempt 2; then its supervisor died before starting it.
    state.finish_run(run_id, "error", 10, {"summary": {"machines_lost": True, "exit_code": 10},
                                           "next_attempt": f"{run_id}-a2"})
    _silence(state, run_id, STALE_BEATS * 1.0 + 30)
    lines = list(follow_logs(run_id, follow=True, state=state, poll_s=0.05))   # returns: not 5 minutes of waiting
    assert lines and f"named its next attempt, {run_id}-a2" in lines[-1] and "not been heard from" in lines[-1], lines
    assert f"fleet up --resume {run_id}" in lines[-1]
