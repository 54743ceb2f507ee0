"""Durations taken from the environment (FLEET_GRACE, FLEET_READY_TIMEOUT, FLEET_SUPERVISOR_BEAT_S):
a value that parses as a float but is no duration (`nan`, `inf`, a negative) falls back to the
default, as a word does. With FLEET_GRACE=nan no moment was ever past the grace, so a stopped
experiment that ignored SIGTERM was never killed."""
from __future__ import annotations

import pytest

from fleet.run import execute, supervisor_beat


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "-5", "soon"])
def test_a_grace_that_is_no_duration_is_the_default(monkeypatch, text):
    monkeypatch.setenv("FLEET_GRACE", text)
    monkeypatch.setenv("FLEET_READY_TIMEOUT", text)
    assert execute.grace_s() == execute.GRACE_S
    assert execute._ready_timeout_s() == execute.READY_TIMEOUT_S


def test_a_grace_that_is_a_duration_is_taken(monkeypatch):
    monkeypatch.setenv("FLEET_GRACE", "2.5")
    assert execute.grace_s() == 2.5
    monkeypatch.setenv("FLEET_GRACE", "0")
    assert execute.grace_s() == 0


@pytest.mark.parametrize("text", ["nan", "inf"])
def test_a_supervisor_beat_that_is_no_duration_is_the_default(monkeypatch, text):
    monkeypatch.setenv(supervisor_beat.ENV_BEAT_S, text)
    assert supervisor_beat.beat_period_s() == supervisor_beat.BEAT_S
