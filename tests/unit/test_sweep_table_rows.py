"""A sweep's table (`fleet sweep`) and `fleet runs compare`'s print one line per trial: a parameter's
value, or a metric's name from the experiment's metrics.json, holding a line break printed a row of
its own under the real one, a trial that never ran ("t009 succeeded") or a CI runner's command."""
from __future__ import annotations

from fleet.cli.sweep import print_sweep
from fleet.report.compare import ComparedRun, Comparison
from fleet.report.compare_render import as_text
from fleet.sweep.summary import SweepSummary, TrialResult

FORGED = "1e-3\nt009   succeeded  0.9    0     1.0s  $0.01  r-forged"


def test_a_value_with_a_line_break_stays_in_its_trials_row(capsys):
    trials = (TrialResult(trial="t001", index=1, params={"lr": FORGED}, state="failed", exit_code=1,
                          metrics={"acc\n::add-mask::x": 0.5}),
              TrialResult(trial="t002", index=2, params={"lr": "3e-4"}, state="succeeded", exit_code=0))
    print_sweep(SweepSummary(sweep_id="s-1", status="completed", exit_code=1, command="train {lr}", trials=trials))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[1].startswith("t001") and lines[2].startswith("t002")
    assert not any(line.startswith(("t009", "::")) for line in lines)
    assert "1e-3^Jt009" in lines[1]


def test_runs_compare_prints_one_line_per_run():
    def run(run_id, lr, acc):
        return ComparedRun(run_id=run_id, status="succeeded", params={"lr": lr}, metrics={"acc\nr-fake": acc},
                           code_commit=None, code_snapshot=None, data={}, command="train", cost_usd=None,
                           gpu_hours=None, trial=None)
    text = as_text(Comparison(runs=(run("r-a", FORGED, 0.5), run("r-b", "3e-4", 0.4)), sort="acc\nr-fake",
                              notes=("t003 not-started: no slot\nr-c  succeeded",)))
    table, _, footer = text.partition("\n\n")
    lines = table.splitlines()
    assert len(lines) == 3 and lines[1].startswith("r-a") and lines[2].startswith("r-b")
    assert not any(line.startswith(("t009", "r-fake", "r-c")) for line in text.splitlines())
