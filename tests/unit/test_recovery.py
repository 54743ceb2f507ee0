"""run_managed's decisions, with the pipeline replaced by a scripted one: when to resume, with
which attempt and checkpoints, and what budget is left for the next attempt."""
from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from fleet.config.model import Config
from fleet.errors import BudgetRefused, CapacityError, InfrastructureError
from fleet.run.recovery import run_managed
from fleet.run.summary import LaunchedMachine, RunSummary


def _summary(run_dir: Path, run_id: str, status: str, *, lost: bool = False, spot: bool = False,
             cost: str = "0.50") -> RunSummary:
    m = LaunchedMachine(rank=0, id=f"{run_id}-n0", instance_type="g6.xlarge", lifecycle="spot" if spot else "on-demand",
                        zone="", gpus=1, price_per_hour="1")
    return RunSummary(run_id=run_id, lease_id=f"l-{run_id}", status=status, exit_code=0 if status == "succeeded" else 10,
                      provider="aws", template="t", gpus=1, machines=1, simulated_gpus=False,
                      run_dir=str(run_dir / run_id), machines_lost=lost or None, cost_usd=cost, launched=[m],
                      message="machine lost" if lost else None)


class Script:
    """Stands in for pipeline.up: returns the scripted summaries in order, records what it was given."""

    def __init__(self, tmp_path: Path, outcomes: list[dict]):
        self.tmp, self.outcomes, self.calls = tmp_path, outcomes, []

    def __call__(self, config, *, options, events):
        self.calls.append((config, options))
        if config.budget is not None and config.budget < Decimal("0.10"):
            raise BudgetRefused(f"the budget's ${config.budget} cannot pay the minimum billing")
        return _summary(self.tmp, options.run_id, **self.outcomes[len(self.calls) - 1])


@pytest.fixture
def config(tmp_path, fleet_home) -> Config:
    return Config(path=None, base_dir=tmp_path, project="p", name="n", command="train", recovery="always",
                  max_restarts=3, store=str(tmp_path / "store"))


def test_a_loss_resumes_as_the_next_attempt_with_the_rest_of_the_budget(config, tmp_path):
    run = Script(tmp_path, [{"status": "error", "lost": True, "cost": "0.30"}, {"status": "succeeded"}])
    got = run_managed(replace(config, budget=Decimal("1.00")), run=run)
    assert got.status == "succeeded" and got.run_id.endswith("-a2")
    (first_cfg, first_opts), (second_cfg, second_opts) = run.calls
    assert first_cfg.budget == Decimal("1.00") and second_cfg.budget == Decimal("0.70")
    assert first_opts.resume is None and second_opts.resume.attempt == 2
    assert second_opts.resume.of_run == first_opts.run_id
    assert [a["attempt"] for a in got.attempts] == [1, 2] and got.attempts[0]["machines_lost"]


def test_a_restart_the_budget_cannot_pay_is_not_started(config, tmp_path):
    run = Script(tmp_path, [{"status": "error", "lost": True, "cost": "0.95"}])
    got = run_managed(replace(config, budget=Decimal("1.00")), run=run)
    assert len(run.calls) == 2 and got.status == "budget-stopped" and got.exit_code == 11
    assert "not resumed after attempt 1" in got.message and "--resume" in got.message, got.message
    assert got.run_id == run.calls[0][1].run_id   # the last attempt that ran, with its checkpoint


def test_a_spent_budget_refuses_without_asking_the_pipeline(config, tmp_path):
    run = Script(tmp_path, [{"status": "error", "lost": True, "cost": "1.00"}])
    got = run_managed(replace(config, budget=Decimal("1.00")), run=run)
    assert len(run.calls) == 1 and got.status == "budget-stopped"


def test_max_restarts_used_up_is_failed(config, tmp_path):
    run = Script(tmp_path, [{"status": "error", "lost": True}] * 3)
    got = run_managed(replace(config, max_restarts=2), run=run)
    assert len(run.calls) == 3 and got.status == "failed" and got.exit_code == 10
    assert "max_restarts (2) is used up after 3 attempts" in got.message


def test_spot_mode_resumes_only_after_losing_spot_machines(config, tmp_path):
    on_demand = Script(tmp_path, [{"status": "error", "lost": True, "spot": False}])
    assert run_managed(replace(config, recovery="spot"), run=on_demand).status == "error"
    assert len(on_demand.calls) == 1
    spot = Script(tmp_path, [{"status": "error", "lost": True, "spot": True}, {"status": "succeeded"}])
    assert run_managed(replace(config, recovery="spot"), run=spot).status == "succeeded"
    assert len(spot.calls) == 2


def test_the_experiments_own_failure_is_never_retried(config, tmp_path):
    run = Script(tmp_path, [{"status": "failed"}])
    got = run_managed(config, run=run)
    assert got.status == "failed" and len(run.calls) == 1 and got.attempts is None


class NoReplacement(Script):
    """The first attempt loses its machine; leasing the next one finds nothing (every host down)."""

    def __call__(self, config, *, options, events):
        if self.calls:
            self.calls.append((config, options))
            raise CapacityError("no SSH host is up with GPUs to lease")
        return super().__call__(config, options=options, events=events)


def test_a_loss_with_no_replacement_ends_the_run_with_its_verdict_and_checkpoint(config, tmp_path, monkeypatch):
    import fleet.run.recovery as recovery
    links = []
    monkeypatch.setattr(recovery, "_link", lambda run_id, nxt, config: links.append((run_id, nxt)))
    run = NoReplacement(tmp_path, [{"status": "error", "lost": True}])
    got = run_managed(config, run=run)
    first = run.calls[0][1].run_id
    assert len(run.calls) == 2 and got.status == "error" and got.exit_code == InfrastructureError.exit_code
    assert got.run_id == first and [a["attempt"] for a in got.attempts] == [1]
    assert "not resumed after attempt 1: no SSH host is up" in got.message, got.message
    assert f"fleet up --resume {first}" in got.message
    assert links[-1] == (first, None)   # followers of the run stop waiting for an attempt 2


def test_a_resume_that_continues_the_run_counts_its_earlier_attempts(config, tmp_path):
    """The reaper's resume of a run whose node 0 vanished: attempt 2 is `<run>-a2`, the lost attempt
    counts against max_restarts and its cost against the budget, and the verdict lists it."""
    from fleet.run.checkpoints import Resume
    from fleet.run.types import RunOptions
    lost = {"attempt": 1, "run_id": "r-x", "status": "lost", "cost_usd": "0.40", "machines_lost": True}
    options = RunOptions(run_id="r-x", resume=Resume(attempt=2, snapshots={0: "s"}, of_run="r-x", previous=(lost,)))
    run = Script(tmp_path, [{"status": "error", "lost": True, "cost": "0.30"}])
    got = run_managed(replace(config, max_restarts=1, budget=Decimal("1.00")), options=options, run=run)
    (cfg, opts), = run.calls
    assert opts.run_id == "r-x-a2" and cfg.budget == Decimal("0.60")
    assert got.status == "failed" and "max_restarts (1) is used up after 2 attempts" in got.message, got.message
    assert [a["attempt"] for a in got.attempts] == [1, 2] and got.attempts[0]["status"] == "lost"
