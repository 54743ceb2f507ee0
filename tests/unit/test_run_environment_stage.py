"""Stage "environment" in the pipeline, against the fake provider and fake machines that can report
an environment: it is captured after setup and before the command, reaches the run record typed,
a rerun's setup installs the recorded set first and its differences reach summary and record, and
a capture that fails is a warning, never the run's failure."""
from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from fleet.environment.model import PinnedEnvironment, RunEnvironment
from fleet.providers.fake import FakeProvider, FakeSettings
from fleet.records.chain import get_record
from fleet.run.context import Events
from fleet.run.lease import NewLease
from fleet.run.machines import CapturesEnvironment
from fleet.run.pipeline import Pipeline
from fleet.run.types import PinnedInputs, RerunOf, RunOptions
from tests.unit.test_environment import machine_env
from tests.unit.test_run_pipeline import FakeMachines, config  # noqa: F401 — the fixture

RECORDED = RunEnvironment(machines=(machine_env(),), wheels_snapshot="c" * 64)


class ReportingMachines(FakeMachines):
    def __init__(self, env: RunEnvironment | None = RECORDED, fail: bool = False):
        super().__init__()
        self.env, self.fail = env, fail
        self.order: list[str] = []
        self.pinned: list[PinnedEnvironment | None] = []

    def execute(self, ctx, lease, command, *, setup=False, on_tick=None):
        self.order.append("setup" if setup else "command")
        return super().execute(ctx, lease, "ok", setup=setup, on_tick=on_tick)

    def capture_environment(self, ctx, lease, store, pinned):
        self.order.append("environment")
        self.pinned.append(pinned)
        if self.fail:
            raise OSError("probe failed")
        env = self.env
        if pinned is not None:
            env = replace(env, pinned_from=pinned.run_id, differences=("driver: 550 → 560",))
        return env


class Warnings(Events):
    def __init__(self):
        self.warnings: list[str] = []

    def warn(self, text: str) -> None:
        self.warnings.append(text)


def _run(cfg, machines, options=None, events=None):
    provider = FakeProvider(FakeSettings(price_per_hour=Decimal(36)))
    return Pipeline(cfg, NewLease(provider), options=options, machines=machines, events=events).run()


def test_captured_after_setup_before_the_command_and_recorded(config):  # noqa: F811
    machines = ReportingMachines()
    assert isinstance(machines, CapturesEnvironment)
    summary = _run(replace(config, setup="ok"), machines)
    assert summary.ok and machines.order == ["setup", "environment", "command"]
    record = get_record(summary.run_id)
    assert RunEnvironment.from_json(record.environment) == RECORDED
    assert record.snapshot_ids()["environment"] == "c" * 64   # kept from `fleet snapshot rm` like any input
    assert summary.environment_differences is None           # not a rerun


def test_a_rerun_installs_the_recorded_set_and_records_what_differs(config, monkeypatch):  # noqa: F811
    staged = []
    monkeypatch.setattr("fleet.environment.pin.stage_wheels", lambda lease, store, pinned, events: staged.append(
        pinned.environment.wheels_snapshot))
    ran = []
    machines = ReportingMachines()
    original = ReportingMachines.execute

    def execute(self, ctx, lease, command, *, setup=False, on_tick=None):
        ran.append(command)   # as the pipeline hands it over (ReportingMachines runs "ok" in its place)
        return original(self, ctx, lease, command, setup=setup, on_tick=on_tick)
    monkeypatch.setattr(ReportingMachines, "execute", execute)
    pinned = PinnedEnvironment("r-old", RECORDED)
    options = RunOptions(rerun_of=RerunOf("r-old", PinnedInputs(), environment=pinned))
    events = Warnings()
    summary = _run(replace(config, setup="ok-setup"), machines, options, events)
    assert staged == ["c" * 64] and machines.pinned == [pinned]
    assert "install-pinned" in ran[0] and ran[0].rstrip().endswith("ok-setup\n}")
    assert summary.environment_differences == ["driver: 550 → 560"]
    assert any("differs from run r-old: driver: 550 → 560" in w for w in events.warnings)
    record = RunEnvironment.from_json(get_record(summary.run_id).environment)
    assert record.pinned_from == "r-old" and record.differences == ("driver: 550 → 560",)


def test_a_rerun_whose_packages_still_differ_does_not_start_its_command(config, monkeypatch):  # noqa: F811
    from fleet.environment.model import Package
    from fleet.errors import IntegrityError
    monkeypatch.setattr("fleet.environment.pin.stage_wheels", lambda *a: None)
    got = RunEnvironment(machines=(machine_env(packages=RECORDED.primary.packages + (Package("extra", "0.1", "e" * 64),)),))
    for allowed in (False, True):
        machines = ReportingMachines(env=got)
        pinned = PinnedEnvironment("r-old", RECORDED, allow_package_change=allowed)
        options = RunOptions(rerun_of=RerunOf("r-old", PinnedInputs(), environment=pinned))
        try:
            summary = _run(replace(config, setup="ok-setup"), machines, options, Warnings())
        except IntegrityError as exc:
            assert not allowed and machines.order == ["setup", "environment"]   # the command never ran
            assert exc.one_line().startswith("run r-old's packages could not be installed again: package extra: "
                                             "added (0.1 (sha256 eeeeeeeeeeee)); the command was not started")
            assert "--allow-package-change" in exc.one_line()
            continue
        assert allowed and summary.ok and machines.order == ["setup", "environment", "command"]


def test_a_failed_capture_warns_and_the_run_still_succeeds(config):  # noqa: F811
    events = Warnings()
    summary = _run(config, ReportingMachines(fail=True), events=events)
    assert summary.ok and get_record(summary.run_id).environment == {}
    assert any("could not capture the machines' environment: probe failed" in w for w in events.warnings)


def test_machines_that_cannot_report_record_no_environment(config):  # noqa: F811
    summary = _run(config, FakeMachines())
    assert summary.ok and get_record(summary.run_id).environment == {}
