"""The live-price cache under FLEET_HOME (fleet/providers/aws/pricing.py) is read back as untrusted:
a file someone edited, an older layout or a write from a machine with a wrong clock must cost one
refetch, never a failed `fleet up` (an exception escapes the table fallback) nor a price that
stays forever or a price of zero, a negative or NaN that a budget would then trust."""
from __future__ import annotations

import json
from decimal import Decimal

import pytest

from fleet.providers.aws import pricing
from tests.unit.test_aws_pricing import Clock, RecordedPricing, SpotEC2, SPOT_HISTORY


def _write(kind: str, data) -> None:
    path = pricing.cache_path(kind, "us-east-1")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("entries", [
    {"g6.xlarge": "junk"},                                                         # an entry not an object
    {"g6.xlarge": {"value": "not a price", "fetched_at": 1_796_000_000.0, "date": "2026-11-30"}},
    {"g6.xlarge": {"value": "0.8", "fetched_at": "yesterday", "date": "2026-11-30"}},
    {"g6.xlarge": {"value": "0.8", "fetched_at": None}},                           # no date either
    {"g6.xlarge": {"value": "NaN", "fetched_at": 1_796_000_000.0, "date": "2026-11-30"}},
    {"g6.xlarge": {"value": "-5", "fetched_at": 1_796_000_000.0, "date": "2026-11-30"}},
    {"g6.xlarge": {"value": "0", "fetched_at": 1_796_000_000.0, "date": "2026-11-30"}},
    ["g6.xlarge"],                                                                 # entries not a map
])
def test_a_damaged_on_demand_entry_is_fetched_again(fleet_home, entries):
    _write("on-demand", {"region": "us-east-1", "kind": "on-demand", "entries": entries})
    client = RecordedPricing()
    prices, dates = pricing.cached_on_demand("us-east-1", ["g6.xlarge"], lambda: client, clock=Clock())
    assert prices == {"g6.xlarge": Decimal("0.8048")} and dates == {"g6.xlarge": "2026-11-30"}
    assert len(client.calls) == 1


@pytest.mark.parametrize("value", ["junk", {"us-east-1a": "free"}, {"us-east-1a": "-0.1"}, {"us-east-1a": "NaN"}])
def test_a_damaged_spot_entry_is_fetched_again(fleet_home, value):
    _write("spot", {"region": "us-east-1", "kind": "spot",
                    "entries": {"g6.xlarge": {"value": value, "fetched_at": 1_796_000_000.0, "date": "2026-11-30"}}})
    ec2 = SpotEC2(SPOT_HISTORY)
    spot = pricing.cached_spot("us-east-1", ["g6.xlarge"], ["us-east-1a"], lambda: ec2, clock=Clock())
    assert spot["g6.xlarge"]["us-east-1a"].price == Decimal("0.3512") and len(ec2.calls) == 1


def test_a_price_fetched_in_the_future_is_not_fresh_forever(fleet_home):
    """A write from a computer whose clock ran a year ahead (or a shared FLEET_HOME with skewed
    clocks): now - fetched_at is negative, which must not read as 'fresher than the TTL'."""
    clock = Clock()
    _write("on-demand", {"region": "us-east-1", "kind": "on-demand", "entries": {
        "g6.xlarge": {"value": "9.99", "fetched_at": clock.now + 365 * 86400, "date": "2027-11-30"}}})
    client = RecordedPricing()
    prices, _ = pricing.cached_on_demand("us-east-1", ["g6.xlarge"], lambda: client, clock=clock)
    assert prices == {"g6.xlarge": Decimal("0.8048")} and len(client.calls) == 1


def test_a_failure_recorded_in_the_future_does_not_block_the_api_forever(fleet_home):
    clock = Clock()
    _write("on-demand", {"region": "us-east-1", "kind": "on-demand", "failed_at": clock.now + 365 * 86400,
                         "failure": "endpoint unreachable"})
    prices, _ = pricing.cached_on_demand("us-east-1", ["g6.xlarge"], RecordedPricing, clock=clock)
    assert prices == {"g6.xlarge": Decimal("0.8048")}


def test_a_damaged_failure_mark_is_ignored(fleet_home):
    _write("on-demand", {"region": "us-east-1", "kind": "on-demand", "failed_at": "soon", "failure": "x"})
    prices, _ = pricing.cached_on_demand("us-east-1", ["g6.xlarge"], RecordedPricing, clock=Clock())
    assert prices == {"g6.xlarge": Decimal("0.8048")}
