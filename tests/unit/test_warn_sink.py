"""A warning noticed deep inside a run (FLEET_HOME's mode, …) goes to the run's Events, as
docs/python-api.md promises a library caller, not to stderr behind the sink's back (fleet/warn_sink.py)."""
from __future__ import annotations

import os

import fleet


class Sink:
    def __init__(self):
        self.warnings = []

    def phase(self, name, detail=""):
        pass

    def log(self, label, stream, line):
        pass

    def warn(self, message):
        self.warnings.append(message)


def test_a_group_writable_fleet_home_is_said_to_the_runs_events_not_on_stderr(experiment, fleet_home, capfd):
    os.chmod(os.environ["FLEET_HOME"], 0o770)
    sink = Sink()
    summary = fleet.up(fleet.load_config(experiment / "fleet.toml"), events=sink)
    assert summary.status == "succeeded" and fleet.status() == []
    assert any("is writable by its group" in w for w in sink.warnings), sink.warnings
    assert capfd.readouterr() == ("", "")


def test_outside_a_run_a_warning_is_one_line_on_stderr(capfd):
    from fleet.warn_sink import warn
    warn("the price list is unreachable")
    assert capfd.readouterr() == ("", "fleet: warning: the price list is unreachable\n")
