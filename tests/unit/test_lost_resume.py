"""What `fleet reap` says about a run it ended lost (fleet/run/lost_resume.py): the lines and JSON
for a resumed run, one that stays lost, and another user's run, which is only ended."""
from __future__ import annotations

from fleet.run.lost_resume import LostRunResume, attempt_of, resume_lost_runs


def test_attempt_numbers_come_from_the_run_id():
    assert attempt_of("r-20261202-101229-6a91") == 1
    assert attempt_of("r-20261202-101229-6a91-a3") == 3


def test_a_resumed_run_names_its_attempt_lease_and_how_to_follow_it():
    done = LostRunResume("r-x-a2", True, attempt=3, next_run_id="r-x-a3", lease_id="l-1", supervisor_pid=42)
    assert done.line() == ("resumed run r-x as attempt 3 (r-x-a3) on lease l-1 from its checkpoints, supervised "
                           "from its node 0: follow it with `fleet attach r-x`")
    assert done.to_json() == {"run_id": "r-x-a2", "resumed": True, "attempt": 3, "next_run_id": "r-x-a3",
                              "lease_id": "l-1", "supervisor_pid": 42}
    dry = LostRunResume("r-x", True, attempt=2, next_run_id="r-x-a2", dry_run=True)
    assert dry.line().startswith("would resume run r-x as attempt 2 (r-x-a2)")


def test_a_run_that_stays_lost_says_why():
    kept = LostRunResume("r-x", False, reason="max_restarts (0) is used up after 1 attempt")
    assert kept.line() == "run r-x stays lost, not resumed: max_restarts (0) is used up after 1 attempt"
    assert kept.to_json() == {"run_id": "r-x", "resumed": False, "reason": "max_restarts (0) is used up after 1 attempt"}
    assert LostRunResume("r-x", False, reason="why", dry_run=True).line().startswith("run r-x would stay lost")


def test_another_users_run_is_only_ended_never_resumed():
    class NoState:   # nothing of the run is read: the owner alone decides
        def __getattr__(self, name):
            raise AssertionError(f"state.{name} asked")
    got, = resume_lost_runs(NoState(), [{"id": "r-x", "owner": "bob", "lease_id": "l-1", "meta": {}}],
                            caller="alice", state_url=None, dry_run=False, events=None)
    assert not got.resumed and "a run of user bob" in got.reason and "only ends other users' runs" in got.reason


def test_of_two_reapers_only_one_marks_a_lost_run_for_resuming(fleet_home):
    from fleet.run.lost_resume import _mark
    from fleet.state import open_state
    state = open_state()
    state.create_run("r-x", lease_id=None, project="p", user="tester", command="train", log_path="l", output_dir="o")
    state.finish_run("r-x", "lost", None, {"summary": {"status": "lost"}})
    assert _mark(state, "r-x", None, "r-x-a2 one")
    assert not _mark(state, "r-x", None, "r-x-a2 two")          # the second finds it marked
    assert _mark(state, "r-x", "r-x-a2 one", None)             # the first could not start it: unmarked
    assert _mark(state, "r-x", None, "r-x-a2 two")
    state.finish_run("r-x", "lost", None, {"next_attempt": "r-x-a2"})
    assert not _mark(state, "r-x", None, "r-x-a2 three")       # resumed already: never twice
