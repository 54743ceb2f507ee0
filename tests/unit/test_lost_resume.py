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


def _lost(state, monkeypatch, tmp_path, *, budget: str, spent: str, spot: bool = True, recovery: str = "always"):
    """A lost attempt 1 on SQLite, its settings and checkpoints stood in for: only the verdict is real."""
    from decimal import Decimal
    from fleet.config.model import Config
    from fleet.models import Lease, Machine, utcnow
    from fleet.run import lost_resume
    from fleet.run.checkpoints import Resume
    from fleet.run.types import PinnedInputs
    state.create_run("r-x", lease_id="l-1", project="p", user="tester", command="train", log_path="l",
                     output_dir="o", meta={"supervised_on": "i-0", "detached": True})
    state.finish_run("r-x", "lost", None, {"summary": {"status": "lost", "cost_usd": spent}})
    node0 = Machine(id="i-0", lease_id="l-1", node_rank=0, host="h", port=22, user="u", key_path="k",
                    host_key="", workdir="/w", spot=spot)
    state.get_lease = lambda lease_id: Lease(id="l-1", provider="aws", template="t", machines=[node0],
                                             created_at=utcnow(), deadline=utcnow(), max_deadline=utcnow())
    config = Config(path=None, base_dir=tmp_path, project="p", name="n", command="train", recovery=recovery,
                    max_restarts=2, provider="aws", store="s3://b/p", state_url="postgresql://db/fleet",
                    budget=Decimal(budget))
    monkeypatch.setattr(lost_resume, "_run_config", lambda *a: (config, PinnedInputs(code_snapshot="c"), {}))
    previous = ({"attempt": 1, "run_id": "r-x", "status": "lost", "cost_usd": spent},)
    import fleet.snapshots
    monkeypatch.setattr(fleet.snapshots, "open_store", lambda url: None, raising=False)
    monkeypatch.setattr(lost_resume, "continued_resume",
                        lambda *a: Resume(attempt=2, snapshots={0: "s"}, of_run="r-x", previous=previous))
    return state.get_run("r-x")


def test_a_budget_the_lost_attempt_spent_is_not_resumed(fleet_home, monkeypatch, tmp_path):
    from fleet.state import open_state
    state = open_state()
    run = _lost(state, monkeypatch, tmp_path, budget="1.00", spent="1.00")
    got, = resume_lost_runs(state, [run], caller="tester", state_url=None, dry_run=False, events=None)
    assert not got.resumed and got.reason.startswith("the budget cannot pay a restart: the run's budget $1.00 is "
                                                     "spent"), got.reason


def test_a_restart_the_budget_gate_refuses_is_not_resumed_and_can_be_tried_again(fleet_home, monkeypatch, tmp_path):
    from fleet.errors import BudgetRefused
    from fleet.run import node_launch
    from fleet.state import open_state
    state = open_state()
    run = _lost(state, monkeypatch, tmp_path, budget="1.00", spent="0.90")
    asked = []

    def gate(config, spec, options, events, pins=None):
        asked.append((config.budget, spec.continues, options.resume.attempt))
        raise BudgetRefused("the budget's $0.10 cannot pay the minimum billing")
    monkeypatch.setattr(node_launch, "launch_on_node0", gate)
    got, = resume_lost_runs(state, [run], caller="tester", state_url=None, dry_run=False, events=None)
    assert not got.resumed and "the budget cannot pay a restart" in got.reason, got.reason
    from decimal import Decimal
    assert asked == [(Decimal("0.10"), True, 2)]   # what the lost attempt left, as the same run's attempt 2
    assert "resuming" not in state.get_run("r-x")["meta"]   # a later reap may try again
    dry, = resume_lost_runs(state, [run], caller="tester", state_url=None, dry_run=True, events=None)
    assert dry.resumed and dry.next_run_id == "r-x-a2" and len(asked) == 1   # a dry run launches nothing


def test_spot_recovery_resumes_only_a_lost_spot_node0(fleet_home, monkeypatch, tmp_path):
    from fleet.state import open_state
    state = open_state()
    run = _lost(state, monkeypatch, tmp_path, budget="5", spent="1", spot=False, recovery="spot")
    got, = resume_lost_runs(state, [run], caller="tester", state_url=None, dry_run=True, events=None)
    assert not got.resumed and got.reason == 'recovery = "spot" and the lost machines were not spot machines'


def test_a_mark_left_by_a_reaper_killed_mid_launch_is_taken_over_only_when_stale_and_unstarted(fleet_home):
    import time
    from fleet.run.lost_resume import STALE_MARK_S, _mark, _take_over_stale_mark
    from fleet.state import open_state
    state = open_state()
    state.create_run("r-y", lease_id=None, project="p", user="tester", command="train", log_path="l", output_dir="o")
    state.finish_run("r-y", "lost", None, {"summary": {"status": "lost"}})
    now = time.time()
    assert _mark(state, "r-y", None, f"r-y-a2 killed {int(now)}")
    # a reaper still within the launch's longest time: never taken over
    assert not _take_over_stale_mark(state, "r-y", f"r-y-a2 second {int(now)}", now=now + 60)
    # past it, and no run of that attempt exists: the second reaper takes it over, and only one
    later = int(now + STALE_MARK_S + 1)
    assert _take_over_stale_mark(state, "r-y", f"r-y-a2 second {later}", now=later)
    assert not _take_over_stale_mark(state, "r-y", f"r-y-a2 third {later}", now=later)   # the new mark is fresh
    assert state.get_run("r-y")["meta"]["resuming"] == f"r-y-a2 second {later}"
    # an attempt that was started (its run exists) is never started again, however old the mark
    state.create_run("r-y-a2", lease_id=None, project="p", user="tester", command="train", log_path="l",
                     output_dir="o")
    assert not _take_over_stale_mark(state, "r-y", f"r-y-a2 fourth {int(now)}", now=now + 10 * STALE_MARK_S)
