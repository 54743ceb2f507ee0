"""A lease released from outside its run (`fleet down LEASE` from another terminal) ends the run,
and recovery never leases again for it, whatever `recovery` says: the user stopped it
(docs/managed-runs.md, "Recovery"). The whole pipeline and run_managed run in-process against the
fake provider; `fleet down` is the library's own, as the other terminal would run it."""
from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from fleet.errors import ExitCode, InfrastructureError
from fleet.leases import down
from fleet.providers.fake import FakeProvider, FakeSettings
from fleet.run.lease import NewLease
from fleet.run.pipeline import Pipeline
from fleet.run.recovery import run_managed
from fleet.run.types import ExecResult
from fleet.state import open_state
from tests.unit.test_run_pipeline import FakeMachines, config  # noqa: F401 — the fixture


class DownFromAnotherTerminal(FakeMachines):
    """The command runs until `fleet down` of its lease: `down` then reports what the executor sees
    of a machine destroyed under it (a rank with no exit status); `down-lost` has the provider
    report it lost too, as Slurm's watch reports the job `fleet down` scancelled."""

    def execute(self, ctx, lease, command, *, setup=False, on_tick=None) -> ExecResult:
        if command not in ("down", "down-lost"):
            return super().execute(ctx, lease, command, setup=setup, on_tick=on_tick)
        self.ran.append((command, setup))
        state = open_state()
        try:
            down([lease.id], state=state)
        finally:
            state.close()
        if command == "down-lost":
            ctx.request_stop("lost", "Slurm ended job 7 under the run: CANCELLED")
            return ExecResult(ExitCode.CANCELLED, "0")
        return ExecResult(ExitCode.INFRASTRUCTURE, "0")


class SpotFake(FakeProvider):
    """Spot machines: what `recovery = "spot"` resumes after losing."""

    def lease(self, plan, lease_id, deadline_s, on_machine=None):
        lease = super().lease(plan, lease_id, deadline_s, on_machine)
        return replace(lease, machines=[replace(m, spot=True) for m in lease.machines])


def all_leases() -> list:
    """Every lease the state holds, released ones too (what a second attempt would have added)."""
    state = open_state()
    try:
        return state.list_leases(active_only=False)
    finally:
        state.close()


class Phases:
    def __init__(self):
        self.lines: list[tuple[str, str]] = []

    def phase(self, name, detail=""):
        self.lines.append((name, detail))

    def log(self, *args, **kwargs):
        pass

    def warn(self, message):
        self.lines.append(("warn", message))


@pytest.mark.parametrize("command", ["down", "down-lost"])
@pytest.mark.parametrize("recovery", ["always", "spot"])
def test_fleet_down_of_a_runs_lease_ends_it_and_nothing_is_leased_again(config, command, recovery):  # noqa: F811
    provider = (SpotFake if recovery == "spot" else FakeProvider)(FakeSettings(price_per_hour=Decimal(36)))
    pipelines = []

    def attempt(cfg, *, options, events):
        pipelines.append(options.run_id)
        return Pipeline(cfg, NewLease(provider), options=options, events=events,
                        machines=DownFromAnotherTerminal()).run()

    events = Phases()
    got = run_managed(replace(config, command=command, recovery=recovery, max_restarts=3), events=events,
                      run=attempt)
    leases = all_leases()
    assert len(pipelines) == 1 and len(leases) == 1, (pipelines, [x.id for x in leases])
    assert not [d for name, d in events.lines if name == "recover"], events.lines
    assert (got.status, got.exit_code) == ("error", ExitCode.INFRASTRUCTURE)
    assert f"lease {leases[0].id} was released from outside this run at 20" in got.message, got.message
    assert not got.machines_lost and got.attempts is None
    assert leases[0].status == "released"


class DownWhileStaging(FakeMachines):
    """`fleet down` lands while inputs are being copied: the copy then fails with `failure`, as a
    vanished machine makes it fail (the sync helper's connection ends: what a loaded CI run saw)."""

    def __init__(self, failure: Exception | None = None):
        super().__init__()
        self.failure = failure or InfrastructureError("sync helper ended without answering")

    def stage(self, inputs, lease, events):
        state = open_state()
        try:
            down([lease.id], state=state)
        finally:
            state.close()
        raise self.failure


def test_fleet_down_during_staging_says_the_lease_was_released_not_the_copy_error(config):  # noqa: F811
    provider = FakeProvider(FakeSettings(price_per_hour=Decimal(36)))
    got = Pipeline(config, NewLease(provider), machines=DownWhileStaging(), events=Phases()).run()
    lease = all_leases()[0]
    assert (got.status, got.exit_code) == ("error", ExitCode.INFRASTRUCTURE)
    assert got.message.startswith(f"lease {lease.id} was released from outside this run"), got.message
    assert lease.status == "released" and not got.machines_lost


class ChannelClosedWhileStaging(FakeMachines):
    """The machine's sshd could not open a session (its open-files limit): paramiko's own exception."""

    def stage(self, inputs, lease, events):
        import paramiko
        raise paramiko.SSHException("Channel closed.")


def test_an_ssh_transport_failure_while_staging_is_an_infrastructure_error_not_an_internal_one(config):  # noqa: F811
    provider = FakeProvider(FakeSettings(price_per_hour=Decimal(36)))
    with pytest.raises(InfrastructureError) as raised:
        Pipeline(config, NewLease(provider), machines=ChannelClosedWhileStaging(), events=Phases()).run()
    assert raised.value.exit_code == ExitCode.INFRASTRUCTURE
    assert "SSH connection to a machine failed (SSHException: Channel closed.)" in raised.value.one_line()
    assert all_leases()[0].status == "released"
