"""Why Slurm took a lost run's machines (fleet/providers/slurm/loss.py, fleet/run/loss_reason.py):
the job's final state once it has one, waiting through COMPLETING, and the run's own message kept
where Slurm has nothing to say (still running, forgotten, controller down)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from fleet.providers.slurm import loss
from fleet.providers.slurm.loss import ExplainsJobLoss
from fleet.providers.slurm.parsing import JobState, QueuedJob
from fleet.run.loss_reason import explain_loss


def _job(state: JobState, reason: str | None = None) -> QueuedJob:
    return QueuedJob("42", "fleet-l-1", state, reason, ("n1",), 1, 1, 600, 10, "fleet:lease=l-1")


class _Slurm:
    def __init__(self, answers):
        self.answers, self.calls = list(answers), 0

    def queue(self, ids=None):
        self.calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


class _Provider(ExplainsJobLoss):
    def __init__(self, slurm):
        self.slurm = slurm

    def _commands_for(self, lease):
        return self.slurm


def _lease(meta=None):
    """What loss_reason reads of a lease: its machines' job ids and its meta."""
    machine = SimpleNamespace(id="l-1-n0", provider_ref={"job_id": "42", "node": "n1"})
    return SimpleNamespace(id="l-1", machines=[machine], meta=meta or {})


_CTX = SimpleNamespace(state=SimpleNamespace(lease_status=lambda lease_id: ("active", None)))


@pytest.fixture(autouse=True)
def _fast(monkeypatch):
    monkeypatch.setattr(loss.time, "sleep", lambda s: None)
    clock = iter(range(0, 10_000))
    monkeypatch.setattr(loss.time, "monotonic", lambda: float(next(clock)))


def test_a_preempted_job_is_named_after_its_completing_phase():
    slurm = _Slurm([[_job(JobState.COMPLETING)], [_job(JobState.COMPLETING)], [_job(JobState.PREEMPTED, "None")]])
    assert _Provider(slurm).loss_reason(_lease()) == "Slurm ended job 42 under the run: PREEMPTED"
    assert slurm.calls == 3


def test_node_fail_keeps_slurms_reason():
    slurm = _Slurm([[_job(JobState.NODE_FAIL, "NodeDown")]])
    assert _Provider(slurm).loss_reason(_lease()) == "Slurm ended job 42 under the run: NODE_FAIL (NodeDown)"


def test_a_job_that_stays_completing_is_said_to_be_ending():
    got = _Provider(_Slurm([[_job(JobState.COMPLETING)]])).loss_reason(_lease())
    assert got == "Slurm is ending job 42 under the run (COMPLETING)"


@pytest.mark.parametrize("answer", [[_job(JobState.RUNNING)], [], RuntimeError("slurmctld down")])
def test_no_verdict_from_slurm_keeps_the_runs_own_message(answer):
    provider = _Provider(_Slurm([answer]))
    assert provider.loss_reason(_lease()) is None
    assert explain_loss(_CTX, provider, _lease(), "machine closed the connection") == "machine closed the connection"


def test_a_provider_without_the_capability_or_no_lease_leaves_the_message():
    assert explain_loss(_CTX, object(), _lease(), "m") == "m"
    assert explain_loss(_CTX, _Provider(_Slurm([[_job(JobState.PREEMPTED)]])), None, "m") == "m"
    assert explain_loss(_CTX, _Provider(_Slurm([[_job(JobState.PREEMPTED)]])), _lease(), "m").endswith("PREEMPTED")


def test_a_lease_released_from_outside_keeps_the_runs_message():
    released = SimpleNamespace(state=SimpleNamespace(lease_status=lambda lease_id: ("released", "2026-12-02")))
    message = "lease l-1 was released from outside this run (`fleet down` or the reaper)"
    assert explain_loss(released, _Provider(_Slurm([[_job(JobState.CANCELLED)]])), _lease(), message) == message
