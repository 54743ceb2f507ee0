"""Which exceptions are a machine's SSH link failing (exit 10, one line) and which stay what they are:
a store's or an endpoint's own connection reset is not a machine's link, and a fleet error that is
not about the machines keeps its own exit code even when a `fleet down` raced it."""
from __future__ import annotations

import paramiko
import pytest

from fleet.errors import ExitCode, InfrastructureError, IntegrityError, transport_failure
from tests.unit.test_run_pipeline import config  # noqa: F401 — the fixture


def _raised_by(fn):
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001
        return exc
    raise AssertionError("did not raise")


def test_paramikos_own_failures_are_the_link():
    got = transport_failure(paramiko.SSHException("Channel closed."))
    assert isinstance(got, InfrastructureError) and got.exit_code == ExitCode.INFRASTRUCTURE
    assert "the SSH connection to a machine failed (SSHException: Channel closed.)" in got.one_line()
    # an EOF raised inside paramiko (its packetizer read nothing)
    eof = _raised_by(lambda: paramiko.packet.Packetizer(_ClosedSocket()).read_all(4))
    assert isinstance(eof, EOFError) and transport_failure(eof) is not None


def test_a_reset_outside_paramiko_is_not_a_machines_link():
    def store_reset():
        raise ConnectionResetError(104, "Connection reset by peer")
    assert transport_failure(_raised_by(store_reset)) is None
    assert transport_failure(_raised_by(lambda: (_ for _ in ()).throw(EOFError()))) is None


class _ClosedSocket:
    def settimeout(self, t):
        pass

    def recv(self, n):
        return b""


def test_a_non_infrastructure_error_racing_a_down_keeps_its_exit_code(config):  # noqa: F811
    from decimal import Decimal

    from fleet.providers.fake import FakeProvider, FakeSettings
    from fleet.run.lease import NewLease
    from fleet.run.pipeline import Pipeline
    from tests.unit.test_released_from_outside import DownWhileStaging

    damaged = IntegrityError("the snapshot store's chunk abc is damaged")
    with pytest.raises(IntegrityError):
        Pipeline(config, NewLease(FakeProvider(FakeSettings(price_per_hour=Decimal(36)))),
                 machines=DownWhileStaging(damaged)).run()
