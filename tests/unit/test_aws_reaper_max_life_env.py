"""FLEET_REAPER_MAX_LEASE_HOURS is the stack's fleet:reaper.maxLeaseHours as the Lambda reads it, and
anyone who may edit the function's environment can write it: 10**20 raised OverflowError making the
timedelta ("²" ValueError: isdigit() takes it, int() does not), so the scheduled pass stopped before
judging a single instance. A value too large is held to the longest the stack config allows; one
that is no positive whole number means the default; either way the pass goes on."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from fleet.providers.aws.reap import DEFAULT_MAX_LIFE, MAX_LIFE_ENV, lambda_handler, max_life_from_env
from tests.unit.test_aws_reaper_odd_tags import EC2

LONGEST = timedelta(hours=366 * 24)      # stacks/config.py: fleet:reaper.maxLeaseHours at most 366 * 24


def _instance(iid, launched_ago: timedelta, expires: str):
    return {"InstanceId": iid, "State": {"Name": "running"}, "LaunchTime": datetime.now(timezone.utc) - launched_ago,
            "Tags": [{"Key": "fleet:lease", "Value": "l-1"}, {"Key": "fleet:stack", "Value": "s"},
                     {"Key": "fleet:expires-at", "Value": expires}]}


@pytest.mark.parametrize("raw, expected", [("100000000000000000000", LONGEST), (str(10 ** 400), LONGEST),
                                           ("999999999999", LONGEST), ("9000", LONGEST), ("²", DEFAULT_MAX_LIFE)],
                         ids=["1e20", "1e400", "1e12", "over-a-year", "superscript-two"])
def test_an_odd_max_lease_hours_is_capped_or_the_default_and_the_pass_goes_on(monkeypatch, raw, expected):
    monkeypatch.setenv(MAX_LIFE_ENV, raw)
    monkeypatch.setenv("FLEET_STACK", "s")
    assert max_life_from_env() == expected
    ec2 = EC2([_instance("i-young", timedelta(hours=1), "9999-12-31T00:00:00Z"),
               _instance("i-expired", timedelta(hours=2), "2000-01-01T00:00:00Z"),
               _instance("i-past-any-cap", timedelta(days=400), "9999-12-31T00:00:00Z")])
    monkeypatch.setattr("boto3.client", lambda _name: ec2)
    result = lambda_handler({}, None)
    assert sorted(ec2.terminated) == ["i-expired", "i-past-any-cap"]
    assert result["reaped"] == 2
