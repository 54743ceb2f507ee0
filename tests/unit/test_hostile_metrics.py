"""metrics.json is the experiment's own file: whatever it holds (an integer of 400 digits, JSON
nested 100,000 deep) is no metric, never fleet's crash. `fleet runs compare` shows the run without
it, a sweep's --stop-if gives no verdict on it, and a sweep.json that is not one is one line."""
from __future__ import annotations

import json

import pytest

from tests.conftest import run_fleet
from tests.unit.test_runs_diff import records  # noqa: F401 — the fixture: four recorded runs

from fleet.run.metrics import read_metrics
from fleet.sweep.stopping import StopRule

HOSTILE = {"huge int": '{"acc": 1%s, "loss": 0.5}' % ("0" * 400),
           "deep": "[" * 100_000 + "]" * 100_000,
           "deep in a value": '{"loss": 0.5, "x": %s}' % ("[" * 100_000 + "]" * 100_000)}


@pytest.mark.parametrize("text", list(HOSTILE.values()), ids=list(HOSTILE))
def test_read_metrics_keeps_the_finite_numbers_and_drops_the_rest(tmp_path, text):
    (tmp_path / "node-0").mkdir()
    (tmp_path / "node-0" / "metrics.json").write_text(text)
    got = read_metrics(tmp_path)
    assert got in ({}, {"loss": 0.5}), got


def test_a_huge_or_special_metrics_file_is_not_read(tmp_path):
    """A sparse metrics.json of gigabytes (NULs, then a map) took 1 GB of memory per 512 MiB to read;
    a FIFO hung the reader. Neither is read: the run shows no metrics."""
    import os
    import resource
    import threading
    node = tmp_path / "node-0"
    node.mkdir()
    with open(node / "metrics.json", "wb") as fh:
        fh.seek(512 * 2 ** 20)            # 512 MiB of NULs, no disk used
        fh.write(b' {"loss": 0.1}')
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert read_metrics(tmp_path) == {}
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 64
    (node / "metrics.json").unlink()
    os.mkfifo(node / "metrics.json")
    got = []
    reader = threading.Thread(target=lambda: got.append(read_metrics(tmp_path)), daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():                 # free the reader stuck on the FIFO, then fail
        os.close(os.open(node / "metrics.json", os.O_WRONLY | os.O_NONBLOCK))
        raise AssertionError("reading a FIFO named metrics.json hung")
    assert got == [{}]


def test_stop_if_gives_no_verdict_on_a_number_no_float_holds():
    rule = StopRule.parse("acc > 0.9 after 2 epochs")
    assert rule.verdict({"acc": 10 ** 400, "epoch": 3}) is None
    assert rule.verdict({"acc": 0.95, "epoch": 10 ** 400}) is None
    assert rule.verdict({"acc": 0.95, "epoch": 3}).startswith("early stop: acc 0.95 > 0.9 at epoch 3")


@pytest.mark.parametrize("text", list(HOSTILE.values()), ids=list(HOSTILE))
def test_runs_compare_shows_a_run_whose_metrics_json_is_hostile(records, text):  # noqa: F811
    node = records / "runs" / "r-a" / "node-0"
    node.mkdir(parents=True)
    (node / "metrics.json").write_text(text)
    done = run_fleet(["runs", "compare", "r-a", "r-b", "--format", "json"], cwd=records)
    assert done.returncode == 0 and "internal error" not in done.stderr, done.stderr
    assert {r["run_id"] for r in json.loads(done.stdout)["runs"]} == {"r-a", "r-b"}


@pytest.mark.parametrize("text", ["garbage", "[]", '{"trials": 5}', '{"trials": [1]}', "[" * 100_000],
                         ids=["not JSON", "a list", "trials a number", "a trial a number", "deep"])
def test_a_damaged_sweep_json_is_one_line(records, text):  # noqa: F811
    sweep = records / "runs" / "s-1"
    sweep.mkdir(parents=True)
    (sweep / "sweep.json").write_text(text)
    done = run_fleet(["runs", "compare", "--sweep", "s-1"], cwd=records)
    assert done.returncode != 0 and done.stdout == "", done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("fleet: error:")]
    assert len(errors) == 1 and "is not a sweep summary fleet wrote" in errors[0], done.stderr
    assert "internal error" not in done.stderr



def test_stop_if_stops_a_trial_whose_metric_diverged():
    """Python's json writes a diverged loss as NaN or Infinity: the trials early stopping is for."""
    rule = StopRule.parse("val_loss > 2.0 after 3 epochs")
    assert rule.verdict({"val_loss": float("nan"), "epochs": 3}).startswith("early stop: val_loss is NaN at epoch 3")
    assert rule.verdict({"val_loss": float("inf"), "epochs": 3}).startswith("early stop: val_loss inf > 2")
    assert rule.verdict({"val_loss": float("nan"), "epochs": 2}) is None        # not yet: its counter rules
    assert rule.verdict({"val_loss": float("-inf"), "epochs": 3}) is None
    assert StopRule.parse("acc < 0.1").verdict({"acc": float("-inf")}).startswith("early stop: acc -inf < 0.1")


def test_a_linked_metrics_file_is_read(tmp_path):
    """A metrics.json that links to best/metrics.json (extraction keeps links inside the machine's
    directory) was skipped once reads refused links (review finding)."""
    best = tmp_path / "node-0" / "best"
    best.mkdir(parents=True)
    (best / "metrics.json").write_text('{"loss": 0.25}')
    (tmp_path / "node-0" / "metrics.json").symlink_to("best/metrics.json")
    assert read_metrics(tmp_path) == {"loss": 0.25}
