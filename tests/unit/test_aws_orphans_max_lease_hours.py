"""`fleet reap` reads the reaper's hard maximum from the stack outputs' reaper.max_lease_hours, which
parse as any int: a hand-edited 10**20 overflowed making its timedelta, and the pass ended in an
error with no instance judged. It is held to the limit the Lambda holds its setting to (reap.py), and
a lease is refused before launch past that limit, where the reaper would end it."""
from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest

from fleet.errors import UsageError
from fleet.providers.aws import orphans
from fleet.providers.aws.expiry import refuse_past_reaper_cap
from tests.unit.test_aws_reaper_max_life_env import _instance
from tests.unit.test_aws_reaper_odd_tags import EC2


@pytest.mark.parametrize("hours", [10 ** 20, 10 ** 400], ids=["1e20", "1e400"])
def test_a_huge_max_lease_hours_in_the_outputs_is_held_to_the_limit(fleet_home, monkeypatch, hours):
    ec2 = EC2([_instance("i-young", timedelta(hours=1), "9999-12-31T00:00:00Z"),
               _instance("i-expired", timedelta(hours=2), "2000-01-01T00:00:00Z"),
               _instance("i-past-any-cap", timedelta(days=400), "9999-12-31T00:00:00Z")])
    outputs = SimpleNamespace(stack="s", region="us-east-1", reaper=SimpleNamespace(max_lease_hours=hours))
    provider = SimpleNamespace(ec2=ec2, outputs=outputs)
    monkeypatch.setattr(orphans, "stack_configured", lambda _config: True)
    monkeypatch.setattr("fleet.providers.aws.provider.AWSProvider", lambda _config: provider)
    region, actions, *_ = orphans.reap_orphans(None, all_users=True)
    assert region == "us-east-1"
    assert sorted(ec2.terminated) == ["i-expired", "i-past-any-cap"]
    assert sorted(a["instance_id"] for a in actions) == ["i-expired", "i-past-any-cap"]


def test_a_lease_past_the_limit_is_refused_however_large_the_outputs_cap():
    outputs = SimpleNamespace(reaper=SimpleNamespace(max_lease_hours=10 ** 20))
    refuse_past_reaper_cap(outputs, 366 * 24 * 3600)
    with pytest.raises(UsageError, match=r"longer than this stack's reaper allows \(8784h"):
        refuse_past_reaper_cap(outputs, 400 * 24 * 3600)
