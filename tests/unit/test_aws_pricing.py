"""Live EC2 prices (fleet/providers/aws/pricing.py): the Price List API parsed from a recorded
get_products response (moto has no pricing service), the cache's TTLs and region keying, the
fallback to the shipped table with one warning line naming its date, spot priced per AZ, and a
machine billed at its own market price (a simulated one still a would-cost, never billed)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from fleet.money.budget import Price, to_micro
from fleet.money.ledger import Ledger
from fleet.money.metering import RunMeter
from fleet.providers.aws import pricing
from fleet.providers.aws.catalog import InstanceType, load_prices, offers
from fleet.providers.aws.launch import plan_attempts
from fleet.providers.aws.outputs import TemplateOutputs
from fleet.providers.aws.provider import AWSProvider
from fleet.report import build_report
from fleet.state.db import Database
from tests.fixtures.ledger import FakeClock, _Lease

RECORDED = Path(__file__).parents[1] / "fixtures" / "pricing" / "get_products_g6_xlarge_us_east_1.json"
TABLE_DATE = json.loads((Path(pricing.__file__).with_name("prices.json")).read_text())["retrieved"]


class RecordedPricing:
    """A pricing client answering get_products from the recorded response: g6.xlarge only; in
    another region (location) at another price, as the API would."""

    def __init__(self):
        self.calls: list[dict] = []

    def get_products(self, **kwargs):
        self.calls.append(kwargs)
        filters = {f["Field"]: f["Value"] for f in kwargs["Filters"]}
        if filters["instanceType"] != "g6.xlarge":
            return {"FormatVersion": "aws_v1", "PriceList": []}
        text = RECORDED.read_text()
        if filters["location"] != "US East (N. Virginia)":
            text = text.replace("0.8048000000", "0.9656000000")
        return json.loads(text)


@dataclass
class Clock:
    now: float = 1_796_000_000.0     # 2026-11-30

    def __call__(self) -> float:
        return self.now


@dataclass
class SpotEC2:
    """describe_spot_price_history pages as EC2 returns them: several rows per AZ, newest not first."""
    history: list[dict]
    calls: list[dict] = field(default_factory=list)

    def get_paginator(self, name):
        assert name == "describe_spot_price_history"
        outer = self

        class Pages:
            def paginate(self, **kwargs):
                outer.calls.append(kwargs)
                rows = [r for r in outer.history if r["InstanceType"] in kwargs["InstanceTypes"]]
                return [{"SpotPriceHistory": rows[:2]}, {"SpotPriceHistory": rows[2:]}]
        return Pages()


def _row(name, zone, price, hours_ago):
    return {"InstanceType": name, "AvailabilityZone": zone, "SpotPrice": price, "ProductDescription": "Linux/UNIX",
            "Timestamp": datetime(2026, 12, 2, 12, tzinfo=timezone.utc) - timedelta(hours=hours_ago)}


SPOT_HISTORY = [_row("g6.xlarge", "us-east-1a", "0.4100", 5), _row("g6.xlarge", "us-east-1a", "0.3512", 1),
                _row("g6.xlarge", "us-east-1b", "0.2981", 2), _row("g6.xlarge", "us-east-1c", "0.1000", 1),
                _row("g5.xlarge", "us-east-1b", "0.5000", 3)]


def test_recorded_get_products_parses_to_the_on_demand_hourly_price():
    price_list = json.loads(RECORDED.read_text())["PriceList"]
    assert all(isinstance(entry, str) for entry in price_list)           # as the API sends them
    assert pricing.parse_on_demand(price_list) == Decimal("0.8048")
    # The Capacity Block product (same filters, another market) is never taken for the list price;
    # nor are Reserved terms.
    assert pricing.parse_on_demand(price_list[1:]) is None
    assert pricing.parse_on_demand([]) is None


def test_the_query_is_the_documented_filter_set():
    got = {f["Field"]: f["Value"] for f in pricing.product_filters("p5.48xlarge", "US East (Ohio)")}
    assert got == {"ServiceCode": "AmazonEC2", "instanceType": "p5.48xlarge", "location": "US East (Ohio)",
                   "operatingSystem": "Linux", "tenancy": "Shared", "preInstalledSw": "NA",
                   "capacitystatus": "Used"}
    assert all(f["Type"] == "TERM_MATCH" for f in pricing.product_filters("x", "y"))


def test_on_demand_is_cached_for_a_day_per_region(fleet_home):
    client, clock = RecordedPricing(), Clock()
    prices, dates = pricing.cached_on_demand("us-east-1", ["g6.xlarge", "g9.none"], lambda: client, clock=clock)
    assert prices == {"g6.xlarge": Decimal("0.8048")} and dates == {"g6.xlarge": "2026-11-30"}
    assert len(client.calls) == 2                       # one query per instance type
    again, _ = pricing.cached_on_demand("us-east-1", ["g6.xlarge", "g9.none"], lambda: client, clock=clock)
    assert again == prices and len(client.calls) == 2   # within the day: no query (a type with no price too)
    clock.now += pricing.ON_DEMAND_TTL_S + 1
    pricing.cached_on_demand("us-east-1", ["g6.xlarge"], lambda: client, clock=clock)
    assert len(client.calls) == 3                       # a day later: asked again

    west, _ = pricing.cached_on_demand("us-west-2", ["g6.xlarge"], lambda: client, clock=clock)
    assert west == {"g6.xlarge": Decimal("0.9656")}     # its own region's price, not us-east-1's cache
    assert {f["Field"]: f["Value"] for f in client.calls[-1]["Filters"]}["location"] == "US West (Oregon)"
    files = sorted(p.name for p in (fleet_home / "cache" / "aws").glob("prices-on-demand-*.json"))
    assert files == ["prices-on-demand-us-east-1.json", "prices-on-demand-us-west-2.json"]
    stored = json.loads((fleet_home / "cache" / "aws" / "prices-on-demand-us-west-2.json").read_text())
    assert stored["region"] == "us-west-2" and stored["entries"]["g6.xlarge"]["date"] == "2026-12-01"


def test_a_failing_api_is_not_asked_again_for_some_minutes(fleet_home):
    calls = []

    def broken():
        calls.append(1)
        raise ConnectionError("endpoint unreachable")
    clock = Clock()
    with pytest.raises(pricing.PricesUnavailable, match="endpoint unreachable"):
        pricing.cached_on_demand("us-east-1", ["g6.xlarge"], broken, clock=clock)
    with pytest.raises(pricing.PricesUnavailable):
        pricing.cached_on_demand("us-east-1", ["g6.xlarge"], broken, clock=clock)
    assert len(calls) == 1
    clock.now += pricing.RETRY_FAILED_AFTER_S + 1
    prices, _ = pricing.cached_on_demand("us-east-1", ["g6.xlarge"], RecordedPricing, clock=clock)
    assert prices == {"g6.xlarge": Decimal("0.8048")}


def test_spot_is_the_latest_price_per_az_cached_for_an_hour(fleet_home):
    ec2, clock = SpotEC2(SPOT_HISTORY), Clock()
    spot = pricing.cached_spot("us-east-1", ["g6.xlarge"], ["us-east-1a", "us-east-1b"], lambda: ec2, clock=clock)
    assert {z: p.price for z, p in spot["g6.xlarge"].items()} == {"us-east-1a": Decimal("0.3512"),
                                                                  "us-east-1b": Decimal("0.2981")}
    assert ec2.calls[0]["ProductDescriptions"] == ["Linux/UNIX"] and ec2.calls[0]["InstanceTypes"] == ["g6.xlarge"]
    assert ec2.calls[0]["StartTime"] == ec2.calls[0]["EndTime"] and ec2.calls[0]["StartTime"].tzinfo is not None
    pricing.cached_spot("us-east-1", ["g6.xlarge"], ["us-east-1a"], lambda: ec2, clock=clock)
    assert len(ec2.calls) == 1
    clock.now += pricing.SPOT_TTL_S + 1
    pricing.cached_spot("us-east-1", ["g6.xlarge"], ["us-east-1a"], lambda: ec2, clock=clock)
    assert len(ec2.calls) == 2


def test_a_spot_first_mix_is_priced_at_the_cheapest_az_and_tried_there_first():
    table = load_prices()
    day = "2026-12-02"
    table = type(table)(**{**table.__dict__, "spot": {"g6.xlarge": {
        "us-east-1a": pricing.SpotPrice(Decimal("0.3512"), "us-east-1a", day),
        "us-east-1b": pricing.SpotPrice(Decimal("0.2981"), "us-east-1b", day)}}})
    catalog = {"g6.xlarge": InstanceType("g6.xlarge", 1, "L4", 0, 0, 0)}
    spot_tpl = TemplateOutputs("one", "lt", ("g6.xlarge",), 1, spot=True)
    mix = offers(spot_tpl, 2, catalog, table, zones=("us-east-1a", "us-east-1b"))[0]
    assert mix.price_per_machine_hour == Decimal("0.2981") and mix.price_per_hour == Decimal("0.5962")
    assert mix.price_source.startswith("spot $0.2981/h (us-east-1b, 2026-12-02)")
    assert "on-demand $0.8048/h" in mix.price_source
    only_a = offers(spot_tpl, 1, catalog, table, zones=("us-east-1a",))[0]
    assert only_a.price_per_machine_hour == Decimal("0.3512")
    on_demand = offers(TemplateOutputs("od", "lt", ("g6.xlarge",), 1, spot=False), 1, catalog, table)[0]
    assert on_demand.price_per_machine_hour == Decimal("0.8048")
    assert on_demand.price_source == f"list price table of {TABLE_DATE} (us-east-1)"
    attempts = plan_attempts([mix], {"us-east-1a": "s-a", "us-east-1b": "s-b"}, spot_first=True,
                             spot_price=lambda t, z: table.spot[t][z].price)
    assert [(a.spot, a.az) for a in attempts] == [(True, "us-east-1b"), (True, "us-east-1a"),
                                                  (False, "us-east-1a"), (False, "us-east-1b")]
    # A launched machine costs its own AZ's spot price, or the on-demand price.
    assert table.machine_price("g6.xlarge", spot=True, zone="us-east-1a")[0] == Decimal("0.3512")
    assert table.machine_price("g6.xlarge", spot=False, zone="us-east-1a")[0] == Decimal("0.8048")
    assert table.machine_price("g6.xlarge", spot=True, zone="us-east-1f")[0] == Decimal("0.8048")


OUTPUTS = {"version": 1, "region": "us-east-1", "vpc_id": "vpc-1", "security_group_id": "sg-1",
           "subnets": {"us-east-1a": "subnet-a"}, "snapshot_bucket": "b",
           "instance_profile": {"arn": "arn:aws:iam::123:instance-profile/fleet", "name": "fleet"},
           "templates": {"aws-1gpu": {"launch_template_id": "lt-1", "instance_types": ["g6.xlarge"],
                                      "gpus_per_machine": 1, "gpu_model": "L4", "spot": True}}}


class NoCredentials:
    def get_credentials(self):
        return None


class CatalogOnly:
    def get_paginator(self, name):
        if name == "describe_spot_price_history":
            raise ConnectionError("no route to the EC2 endpoint")

        class Pages:
            def paginate(self, **_):
                return [{"InstanceTypes": [{"InstanceType": "g6.xlarge", "GpuInfo": {"Gpus": [
                    {"Count": 1, "Name": "L4", "MemoryInfo": {"SizeInMiB": 22888}}]}}]}]
        return Pages()


def test_without_credentials_the_shipped_table_is_used_with_one_warning_naming_its_date(fleet_home, monkeypatch,
                                                                                        capsys):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_EC2", raising=False)
    monkeypatch.delenv(pricing.ENV_LIVE, raising=False)
    monkeypatch.setattr(pricing, "_warned", set())
    provider = AWSProvider(outputs=OUTPUTS, ec2=CatalogOnly(), session=NoCredentials(), sandbox=False)
    mix = provider.offers("aws-1gpu", 1)[0]
    provider.offers("aws-1gpu", 1)                      # asked twice: warned once
    AWSProvider(outputs=OUTPUTS, ec2=CatalogOnly(), session=NoCredentials(), sandbox=False).offers("aws-1gpu", 1)
    assert mix.price_per_machine_hour == Decimal("0.8048")
    assert mix.price_source == f"list price table of {TABLE_DATE} (us-east-1)"
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        f"fleet: warning: AWS Price List API unavailable (no AWS credentials found): on-demand prices are the "
        f"list price table of {TABLE_DATE} (us-east-1)",
        "fleet: warning: EC2 spot price history unavailable (no route to the EC2 endpoint): spot is priced at "
        "the on-demand price, which it never exceeds"]


def test_live_prices_are_asked_of_aws_only_unless_switched(monkeypatch):
    assert pricing.live_prices_enabled(False, {})
    assert not pricing.live_prices_enabled(True, {})                                 # the sandbox
    assert not pricing.live_prices_enabled(False, {"AWS_ENDPOINT_URL": "http://127.0.0.1:5000"})
    assert pricing.live_prices_enabled(True, {pricing.ENV_LIVE: "1"})
    assert not pricing.live_prices_enabled(False, {pricing.ENV_LIVE: "0"})


@dataclass
class SpotMachine:
    id: str
    gpu_slots: tuple
    price_per_hour: Decimal
    provider_ref: dict


@pytest.mark.parametrize("simulated", [False, True])
def test_a_spot_machine_is_billed_at_its_own_price_and_a_sandbox_one_is_never_billed(tmp_path, simulated):
    db = Database(tmp_path / "state.db")
    try:
        clock = FakeClock(datetime(2026, 12, 2, 8, tzinfo=timezone.utc))
        ledger = Ledger(db, clock)
        meter = RunMeter(ledger, clock=clock)
        machine = SpotMachine("i-0spot", (0,), Decimal("0.2981"),
                              {"price_source": "spot $0.2981/h (us-east-1b, 2026-12-02)"})
        lease = _Lease("l-spot", "vision", "ana", "aws-1gpu", "aws", [machine])
        quoted = Price(to_micro("0.8048"), "on-demand, AWS Price List API (us-east-1, 2026-12-02)", simulated)
        meter.open_machine(lease, machine, quoted, run_id="r-spot")
        clock.advance(3600)
        ledger.close(meter.segments)
        total = build_report(ledger, by="project").total
        assert (total.cost_micro, total.would_cost_micro) == ((0, to_micro("0.2981")) if simulated
                                                              else (to_micro("0.2981"), 0))
        overridden = Price(to_micro("0.5"), "fleet.toml [prices]", simulated)   # [prices] still wins
        other = SpotMachine("i-0two", (0,), Decimal("0.2981"), {"price_source": "spot"})
        meter.open_machine(_Lease("l-two", "vision", "ana", "aws-1gpu", "aws", [other]), other, overridden)
        assert meter.segments[-1].price.per_hour_micro == to_micro("0.5")
    finally:
        db.close()


class PagedPricing(RecordedPricing):
    """The same answer split over two pages (NextToken), the on-demand product on the second."""

    def get_products(self, **kwargs):
        whole = super().get_products(**kwargs)
        if "NextToken" not in kwargs:
            return {"FormatVersion": "aws_v1", "PriceList": whole["PriceList"][1:], "NextToken": "page-2"}
        assert kwargs["NextToken"] == "page-2"
        return {"FormatVersion": "aws_v1", "PriceList": whole["PriceList"][:1]}


def test_pages_are_followed_and_refresh_asks_again_within_the_ttl(fleet_home):
    client, clock = PagedPricing(), Clock()
    prices, _ = pricing.cached_on_demand("us-east-1", ["g6.xlarge"], lambda: client, clock=clock)
    assert prices == {"g6.xlarge": Decimal("0.8048")} and len(client.calls) == 2
    pricing.cached_on_demand("us-east-1", ["g6.xlarge"], lambda: client, clock=clock, refresh=True)
    assert len(client.calls) == 4                     # `fleet offers --refresh`: asked although fresh
    ec2 = SpotEC2(SPOT_HISTORY)
    pricing.cached_spot("us-east-1", ["g6.xlarge"], [], lambda: ec2, clock=clock)
    pricing.cached_spot("us-east-1", ["g6.xlarge"], [], lambda: ec2, clock=clock, refresh=True)
    assert len(ec2.calls) == 2


def test_a_spot_priced_runs_first_deadline_counts_the_on_demand_ceiling(tmp_path):
    """Budget $1: at the quoted spot price $0.25/h it would last 4 h, but the machines may cost the
    on-demand $1/h (spot rising, or launched on-demand for want of spot capacity): the first
    deadline (the reaper's line should the controller die) is at 1 h."""
    from fleet.config.model import Config
    from fleet.models import Template
    from fleet.run.budget import BudgetGate
    from fleet.run.types import Offer
    from fleet.state import open_state
    spot = Template("aws-1gpu", "aws", 1, price_per_hour=Decimal("0.25"), price_source="spot $0.25/h (a, d)",
                    spot=True, price_ceiling_per_hour=Decimal("1"))
    config = Config(path=None, base_dir=tmp_path, project="p", name="p", command="true", provider="aws",
                    budget=Decimal(1), state_url=f"sqlite:///{tmp_path / 'state.db'}")
    state = open_state(config.state_url)
    try:
        offer = Offer(provider="aws", template=spot, gpus=1, machine_count=1, max_duration_s=86400,
                      heartbeat_ttl_s=60, project="p", user="u", spot=True)
        grant = BudgetGate(config, state).grant(offer, run_id="r-1", lease_id="l-1")
        assert grant.price.per_hour_micro == to_micro("0.25")           # metered at the quote until machines say
        assert grant.exhausted_in_s == pytest.approx(3600, abs=1)
        no_ceiling = Offer(**{**offer.__dict__, "template": Template(**{**spot.__dict__,
                                                                           "price_ceiling_per_hour": None})})
        assert BudgetGate(config, state).grant(no_ceiling, run_id="r-2", lease_id="l-2").exhausted_in_s == \
            pytest.approx(4 * 3600, abs=1)
        fixed = Config(**{**config.__dict__, "prices": {"aws-1gpu": Decimal("0.5")}})   # [prices]: no ceiling
        assert BudgetGate(fixed, state).grant(offer, run_id="r-3", lease_id="l-3").exhausted_in_s == \
            pytest.approx(2 * 3600, abs=1)
    finally:
        state.close()
