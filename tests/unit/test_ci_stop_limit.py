"""How long a CI run may take after a SIGTERM before it hurries (fleet/run/signals.py): under
GitLab, which sends one SIGTERM and then SIGKILL, always bounded; FLEET_STOP_LIMIT chooses, and a
value that is no number of seconds is said in one line while the default still bounds the run."""
from __future__ import annotations

import pytest

from fleet.ci import GITLAB_STOP_LIMIT_S, stop_limit_s


def test_gitlab_is_bounded_by_default_and_github_hurries_on_its_own_second_signal():
    assert stop_limit_s({"CI": "true", "GITLAB_CI": "true"}) == GITLAB_STOP_LIMIT_S < 10
    assert stop_limit_s({"CI": "true", "GITHUB_ACTIONS": "true"}) is None


def test_fleet_stop_limit_chooses_the_bound_in_any_ci():
    assert stop_limit_s({"GITLAB_CI": "true", "FLEET_STOP_LIMIT": "20"}) == 20.0
    assert stop_limit_s({"CI": "true", "FLEET_STOP_LIMIT": "2.5"}) == 2.5     # another CI sending one SIGTERM


@pytest.mark.parametrize("value", ["5m", "-1", "inf", "nan"])
def test_a_value_that_is_no_number_of_seconds_is_said_and_the_default_kept(value):
    said: list[str] = []
    assert stop_limit_s({"GITLAB_CI": "true", "FLEET_STOP_LIMIT": value}, warn=said.append) == GITLAB_STOP_LIMIT_S
    assert said == [f"FLEET_STOP_LIMIT={value!r} is not a number of seconds: using {GITLAB_STOP_LIMIT_S:g}"]


@pytest.mark.parametrize("value", ["1e10", "99999999999999999999"])
def test_a_limit_too_long_to_wait_for_never_hurries_and_ends_in_no_traceback(monkeypatch, value):
    """A limit past what a wait can take (threading.TIMEOUT_MAX, 292 years) is 'never hurry': the
    stop limit's thread raised OverflowError at the SIGTERM, and the cancelled job's log showed
    'Exception in thread stop-limit' with its traceback."""
    import os
    import signal
    import threading
    import time
    from datetime import datetime, timezone
    from pathlib import Path
    from types import SimpleNamespace

    from fleet.run.context import RunContext
    from fleet.run.signals import StopSignals
    failed: list = []
    monkeypatch.setattr(threading, "excepthook", failed.append)
    said: list[str] = []
    ctx = RunContext(config=None, offer=None, plan=None, run_id="r-1", lease_id="l-1", state=None,
                     events=SimpleNamespace(warn=said.append),
                     run_dir=Path("."), started_at=datetime.now(timezone.utc),
                     stop_limit_s=stop_limit_s({"GITLAB_CI": "true", "FLEET_STOP_LIMIT": value}))
    with StopSignals(ctx) as signals:
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 5
        while not ctx.cancel.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)            # the limit's thread wakes and starts its wait
        assert signals.limit.is_alive() and not failed, failed
    assert ctx.cancel.is_set() and not ctx.hurry.is_set() and not said and not failed, (said, failed)
