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
