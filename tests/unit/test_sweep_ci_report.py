"""A sweep's CI report runs after its pool has ended, where a stop signal raised KeyboardInterrupt
(fleet.ci.failures_reported). A GitHub runner cancels with SIGINT and, 7.5 s later, SIGTERM: the
second signal landed while the report scrubbed the trials' files, so the rest kept their secrets in
the job's artifact, and the job summary got a second report, "fleet run (not started): cancelled
before the run started", of a sweep whose trials had run."""
from __future__ import annotations

import os
import signal
from types import SimpleNamespace

import pytest

from fleet.ci import failures_reported
from fleet.masking import Masker
from fleet.sweep.ci_report import report_sweep
from fleet.sweep.summary import SweepSummary, TrialResult

TOKEN = "tok-9c41e07d5b"


def test_a_stop_signal_during_a_sweeps_ci_report_leaves_no_secret_and_no_second_summary(tmp_path, monkeypatch):
    sweep_dir = tmp_path / "runs" / "s-1"
    outputs = [sweep_dir / f"t00{i}" / "node-0" / "out.txt" for i in (1, 2, 3)]
    for path in outputs:
        path.parent.mkdir(parents=True)
        path.write_text(f"token {TOKEN}\n")
    summary = SweepSummary(sweep_id="s-1", status="cancelled", exit_code=130, command="train", run_dir=str(sweep_dir),
                           trials=tuple(TrialResult(trial=f"t00{i}", index=i, params={"x": str(i)}, state="stopped")
                                        for i in (1, 2, 3)))
    step_summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
    monkeypatch.setenv("MY_TOKEN", TOKEN)
    scrub = Masker.scrub_file

    def runner_sigterm_lands(self, path):   # the runner's SIGTERM, as the report begins its scrub
        if path == outputs[0]:
            os.kill(os.getpid(), signal.SIGTERM)
        return scrub(self, path)
    monkeypatch.setattr(Masker, "scrub_file", runner_sigterm_lands)
    config = SimpleNamespace(secrets=["MY_TOKEN"], env={}, command="train", setup=None)
    with pytest.raises(KeyboardInterrupt):
        with failures_reported():        # as `fleet sweep --ci` runs
            report_sweep(summary, config)
            raise KeyboardInterrupt      # a signal after the report: the sweep has had its summary
    assert [path.read_text() for path in outputs] == ["token ***\n"] * 3
    text = step_summary.read_text()
    assert "fleet sweep `s-1`" in text and "fleet run" not in text and "not started" not in text, text


def test_a_stop_signal_between_the_pools_end_and_the_report_still_leaves_the_summary_and_no_secret(
        tmp_path, monkeypatch):
    """The same second signal a moment earlier, as sweep.json was being written after the pool had
    ended: it raised there, so the sweep had no summary and the report never scrubbed."""
    from decimal import Decimal

    from fleet.run import pipeline
    from fleet.sweep import pool
    from fleet.sweep.params import Trial
    from fleet.sweep.spec import SweepSpec
    sweep_dir = tmp_path / "runs" / "s-2"
    output = sweep_dir / "t001" / "node-0" / "out.txt"
    output.parent.mkdir(parents=True)
    output.write_text(f"token {TOKEN}\n")
    results = (TrialResult(trial="t001", index=1, params={"x": "1"}, state="succeeded"),)
    scheduler = SimpleNamespace(ordered_results=lambda: results, shrink=SimpleNamespace(released={}))

    class PoolMachines:
        def __init__(self, *args):
            self.scheduler, self.leased, self.staged = scheduler, 1, None

    class Pipeline:
        def __init__(self, *args, **kwargs):
            pass

        def run(self):
            return SimpleNamespace(status="succeeded", exit_code=0, run_id="r-pool", lease_id="l-1", machines=1,
                                   cost_usd=None, would_cost_usd=None, message=None, budget_stop=None)
    monkeypatch.setattr(pool, "PoolMachines", PoolMachines)
    monkeypatch.setattr(pool, "pool_config", lambda config, spec, provider: config)
    monkeypatch.setattr(pipeline, "Pipeline", Pipeline)
    write = SweepSummary.write

    def runner_sigterm_lands(self, directory):
        os.kill(os.getpid(), signal.SIGTERM)
        return write(self, directory)
    monkeypatch.setattr(SweepSummary, "write", runner_sigterm_lands)
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "summary.md"))
    monkeypatch.setenv("MY_TOKEN", TOKEN)
    config = SimpleNamespace(secrets=["MY_TOKEN"], env={}, command="train", setup=None, budget=Decimal(5))
    spec = SweepSpec(command="train {x}", trials=(Trial(index=1, params=(("x", "1"),)),), sweep_id="s-2")
    try:
        with failures_reported():        # as `fleet sweep --ci` runs
            out = pool.sweep(config, spec, provider=object(), run_dir_root=tmp_path / "runs",
                             options=pool.RunOptions(ci=True))
    except KeyboardInterrupt:
        pytest.fail("the stop signal cut the sweep short after its pool had ended")
    assert out.status == "completed" and (sweep_dir / "sweep.json").is_file()
    assert output.read_text() == "token ***\n"
    assert "fleet sweep `s-2`" in (tmp_path / "summary.md").read_text()
