"""The typed public API of a run: fleet.up returns a RunSummary, Events is exported, py.typed ships."""
from __future__ import annotations

import tomllib
import typing
from pathlib import Path

import fleet


def test_up_and_run_on_lease_are_typed_to_return_a_run_summary():
    for fn in (fleet.up, fleet.run_on_lease):
        assert typing.get_type_hints(fn)["return"] is fleet.RunSummary


def test_events_is_exported_and_checked_when_a_run_is_given_one():
    from fleet.run.context import SilentEvents, checked_events
    assert isinstance(SilentEvents(), fleet.Events)

    class NoWarn:
        def phase(self, name, detail=""): ...
        def log(self, label, stream, line): ...

    try:
        checked_events(NoWarn())
    except TypeError as exc:
        assert "no warn()" in str(exc)
    else:
        raise AssertionError("an Events sink without warn() was accepted")


def test_py_typed_ships_with_the_package():
    root = Path(fleet.__file__).parent
    assert (root / "py.typed").is_file()
    pyproject = tomllib.loads((root.parent / "pyproject.toml").read_text())
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["fleet"]


def test_summary_json_keys_stay_stable():
    summary = fleet.RunSummary(run_id="r", lease_id="l", status="succeeded", exit_code=0, provider="local",
                               template="t", gpus=1, machines=1, simulated_gpus=True, run_dir="/x")
    data = summary.to_json()
    for key in ("run_id", "lease_id", "status", "exit_code", "provider", "template", "gpus", "machines",
                "simulated_gpus", "run_dir", "started_at", "ended_at", "duration_s", "released"):
        assert key in data
    assert "cost_usd" not in data and summary["exit_code"] == 0 and summary.get("cost_usd") is None
    assert summary.updated(cost_usd="1.5").to_json()["cost_usd"] == "1.5"
