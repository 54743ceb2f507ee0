"""Price answers fleet cannot use as a price (NaN, infinite, zero, negative) are skipped one row
at a time: an on-demand product priced "NaN" made every on-demand price unavailable for minutes
(InvalidOperation on comparing it), and a spot row priced "NaN", "0" or "-1" as an AZ's latest
made the whole instance type's spot prices vanish from the cache and be asked for again each time."""
from __future__ import annotations

import json
from decimal import Decimal

import pytest

from fleet.providers.aws import pricing
from tests.unit.test_aws_pricing import RECORDED, Clock, SpotEC2, _row


class OddPricing:
    """The recorded g6.xlarge product, plus a second one whose hourly price is `odd`."""

    def __init__(self, odd: str):
        self.odd = odd

    def get_products(self, **kwargs):
        page = json.loads(RECORDED.read_text())
        page["PriceList"] = page["PriceList"] + [page["PriceList"][0].replace("0.8048000000", self.odd)]
        return page


@pytest.mark.parametrize("odd", ["NaN", "Infinity", "sNaN"])
def test_an_on_demand_product_priced_nan_or_infinite_is_skipped(fleet_home, odd):
    prices, _ = pricing.cached_on_demand("us-east-1", ["g6.xlarge"], lambda: OddPricing(odd), clock=Clock())
    assert prices == {"g6.xlarge": Decimal("0.8048000000")}


@pytest.mark.parametrize("odd", ["NaN", "0", "-1", "Infinity"])
def test_an_azs_spot_price_that_is_no_price_leaves_the_other_azs_priced(fleet_home, odd):
    ec2 = SpotEC2([_row("g6.xlarge", "us-east-1a", "0.4100", 5), _row("g6.xlarge", "us-east-1a", odd, 1),
                   _row("g6.xlarge", "us-east-1b", "0.2981", 2)])
    spot = pricing.cached_spot("us-east-1", ["g6.xlarge"], [], lambda: ec2, clock=Clock())
    assert {z: p.price for z, p in spot["g6.xlarge"].items()} == {"us-east-1b": Decimal("0.2981")}
    pricing.cached_spot("us-east-1", ["g6.xlarge"], [], lambda: ec2, clock=Clock())
    assert len(ec2.calls) == 1
