"""The reaper's hard maximum: a machine's fleet:expires-at is its launcher's word (9999-12-31 once
spared it forever), so every instance goes `max_life` after launch whatever that tag says; the AWS
provider refuses a lease longer than the stack's cap before anything is launched."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from fleet.errors import UsageError
from fleet.providers.aws.expiry import refuse_past_reaper_cap
from fleet.providers.aws.outputs import parse_outputs
from fleet.providers.aws.reap import DEFAULT_MAX_LIFE, EXPIRY_GRACE, judge
from tests.unit.test_aws_outputs import SAMPLE

LAUNCHED = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)


def _inst(expires: str = "9999-12-31T00:00:00Z", deadline: str | None = None):
    tags = [{"Key": "fleet:lease", "Value": "l-1"}, {"Key": "fleet:expires-at", "Value": expires}]
    if deadline:
        tags.append({"Key": "fleet:deadline", "Value": deadline})
    return {"InstanceId": "i-1", "Tags": tags, "LaunchTime": LAUNCHED, "State": {"Name": "running"}}


@pytest.mark.parametrize("live", [None, {"l-1"}])
def test_a_far_expiry_tag_spares_nothing_past_the_hard_maximum(live):
    line = LAUNCHED + DEFAULT_MAX_LIFE + EXPIRY_GRACE
    assert judge(_inst(), live, line - timedelta(seconds=1)) is None
    assert "hard maximum" in judge(_inst(), live, line)
    assert "hard maximum" in judge(_inst(deadline="9999-12-31T00:00:00Z"), live, line)
    assert judge(_inst(), live, line, max_life=timedelta(days=30)) is None     # the stack's own cap


def test_a_lease_longer_than_the_stacks_cap_is_refused_in_one_line():
    outputs = SimpleNamespace(reaper=SimpleNamespace(max_lease_hours=48))
    refuse_past_reaper_cap(outputs, 48 * 3600)
    with pytest.raises(UsageError) as err:
        refuse_past_reaper_cap(outputs, 72 * 3600)
    assert "max_duration 72h is longer than this stack's reaper allows (48h" in str(err.value)
    assert "fleet:reaper.maxLeaseHours" in err.value.one_line()
    older = SimpleNamespace(reaper=SimpleNamespace(max_lease_hours=None))   # outputs from before the cap
    refuse_past_reaper_cap(older, 7 * 24 * 3600)
    with pytest.raises(UsageError, match="168h"):
        refuse_past_reaper_cap(older, 8 * 24 * 3600)


def test_the_cap_travels_in_the_stack_outputs():
    parsed = parse_outputs(dict(SAMPLE, reaper={"function_name": "f", "max_lease_hours": 720}))
    assert parsed.reaper.max_lease_hours == 720
    assert parse_outputs(parsed.to_dict()).reaper.max_lease_hours == 720
    assert parse_outputs(SAMPLE).reaper.max_lease_hours is None
