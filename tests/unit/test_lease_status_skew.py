"""`fleet status` on a team's shared state remembers what AWS said for a minute
(machine_observations). An answer written by a teammate's computer whose clock runs ahead carries
an observed_at and a fresh_until in everyone else's future: it must not pass as fresh for as long
as that clock is ahead (an hour ahead: an hour of 'running' for machines EC2 has since ended, and
no 'orphaned' either). Status asks again instead."""
from __future__ import annotations

from datetime import timedelta

from fleet.lease_status import status
from fleet.models import utcnow
from tests.unit import test_lease_status
from tests.unit.test_lease_status import _Remote, _states

remote = test_lease_status.remote   # the fixture: three leases of a remote fake, on SQLite and PostgreSQL


def test_an_answer_from_a_clock_ahead_is_not_fresh_for_an_hour(remote):
    state, _ids = remote
    assert _states(status(state)) == {"running"} and _Remote.calls == 1
    ahead = utcnow() + timedelta(hours=1)                  # the teammate's clock wrote this row
    state.db.execute("UPDATE machine_observations SET observed_at = ?, fresh_until = ?",
                     (ahead.isoformat(), (ahead + timedelta(seconds=60)).isoformat()))
    _Remote.says = "gone"                                  # EC2 has ended them since
    assert _states(status(state)) == {"gone"} and _Remote.calls == 2
