"""The watchdog ends its machine at the hard maximum it was started with, whatever the state
directory says: the machine's login owns that directory, and a deadline written there far in the
future (the experiment, or anything running as that login) kept the machine up past max_duration,
with no controller needed to extend it (on AWS, billed until the reaper came)."""
from __future__ import annotations

import time

from fleet.remote.agent.agent import BOOT_CLOCK
from tests.fixtures.watchdog import assert_expired_at_deadline, watchdog


def test_a_deadline_written_past_the_maximum_does_not_keep_the_machine_up(tmp_path):
    state = tmp_path / "state"
    with watchdog(state, "m-hardmax") as proc:
        # What the login can do: a deadline (and a cap) a day away, on either clock.
        far = repr(max(time.time(), time.clock_gettime(BOOT_CLOCK)) + 86400)
        for name in ("deadline", "max_deadline", "boot_deadline", "boot_max_deadline"):
            (state / name).write_text(far)
        assert_expired_at_deadline(proc, state)


def test_a_deadline_that_is_not_a_number_does_not_keep_the_machine_up(tmp_path):
    state = tmp_path / "state"
    with watchdog(state, "m-nan") as proc:
        # float() reads "nan": no time is at or past it, and min() with the maximum kept it.
        for name in ("deadline", "boot_deadline"):
            (state / name).write_text("nan")
        assert_expired_at_deadline(proc, state)
