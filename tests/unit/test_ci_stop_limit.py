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
