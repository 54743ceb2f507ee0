"""A run that failed because its lease was released from outside (`fleet down` while it was still
staging, after its machines had answered) says so, rather than the SSH failure that followed (CI
with both cores busy: "machine … does not answer SSH: No such file … id_ed25519")."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from types import SimpleNamespace

from fleet.run.execute import not_lost_if_released


@dataclass(frozen=True)
class Outcome:
    status: str = "error"
    message: str | None = None
    machines_lost: bool = False


def _ctx(released: bool):
    at = datetime(2026, 12, 5, tzinfo=timezone.utc) if released else None
    return SimpleNamespace(lease_id="l-1", state=SimpleNamespace(lease_status=lambda lease_id: ("active", at)))


def test_an_error_after_a_release_from_outside_is_reported_as_the_release():
    failed = Outcome(message="machine l-1-n0 does not answer SSH: No such file or directory")
    said = not_lost_if_released(_ctx(True), failed)
    assert said.message.startswith("lease l-1 was released from outside this run") and said.status == "error"
    assert not_lost_if_released(_ctx(False), failed) == failed                # not released: its own reason
    done = Outcome(status="succeeded")
    assert not_lost_if_released(_ctx(True), done) == done                    # a result is not rewritten
