"""Live prices against the moto server the AWS tests share: moto answers describe_spot_price_history
(a placeholder price, $0.00001, per AZ) but has no Price List service (it answers HTTP 500), so a
plan is priced at moto's spot price per AZ, on-demand falls back to the shipped table with one
warning line, the plan says which, and a launched spot machine carries its own AZ's spot price."""
from __future__ import annotations

import hashlib
import json
import re
from decimal import Decimal
from pathlib import Path

import pytest

from fleet.config.model import Config
from fleet.providers.aws import pricing
from fleet.providers.aws.launch import find_instances
from fleet.providers.aws.outputs import load_outputs
from fleet.providers.aws.provider import AWSProvider
from fleet.providers.aws.sandbox import DEFAULT_TEMPLATES, create_stack
from tests.fixtures.aws import NoConnectAddressMap, fast_sleep, point_boto3_at, reset_moto

pytestmark = pytest.mark.timeout(120)
MOTO_SPOT = Decimal("0.00001")      # what moto 5 answers for every type and AZ
DATE = r"\d{4}-\d{2}-\d{2}"


@pytest.fixture(scope="module")
def stack(moto_server):
    with pytest.MonkeyPatch.context() as mp:
        point_boto3_at(mp, moto_server)
        yield load_outputs(create_stack(templates=DEFAULT_TEMPLATES))
    reset_moto(moto_server)


@pytest.fixture
def live(stack, fleet_home, monkeypatch):
    """Live prices switched on against moto (they are off for any non-AWS endpoint by default)."""
    monkeypatch.setenv(pricing.ENV_LIVE, "1")
    monkeypatch.setattr(pricing, "_warned", set())
    return stack


def test_spot_history_from_moto_is_read_per_az(live):
    provider = AWSProvider(outputs=live, sandbox=NoConnectAddressMap())
    zones = tuple(live.subnets)
    got = pricing.fetch_spot(provider.ec2, ["g6.xlarge", "g5.xlarge"], zones)
    assert set(got) == {"g6.xlarge", "g5.xlarge"}
    assert set(got["g6.xlarge"]) == set(zones) and set(got["g6.xlarge"].values()) == {MOTO_SPOT}


def test_a_spot_first_plan_is_priced_at_spot_and_says_where_on_demand_came_from(live, tmp_path, capsys):
    from fleet.cli.plan_view import plan_lines
    from fleet.run.offer import quote
    provider = AWSProvider(outputs=live, sandbox=NoConnectAddressMap(), sleep=fast_sleep, ready_timeout_s=30)
    config = Config(path=None, base_dir=tmp_path, project="p", name="p", command="true", provider="aws",
                    gpus=2, template="aws-1gpu")
    q = quote(config, provider)
    assert q.lifecycle == "spot" and q.price_per_hour == MOTO_SPOT * 2
    first_zone = min(live.subnets)        # moto's prices are all equal: the tie goes to the first AZ by name
    assert re.fullmatch(rf"spot \$0\.00001/h \({first_zone}, {DATE}\); on-demand \$0\.8048/h where there is no "
                        r"spot capacity", q.price_source), q.price_source
    lines = {line[:10].strip(): line for line in plan_lines(q)}
    assert "would cost $0.00002 per hour (spot $0.00001/h (" in lines["price"]   # the sandbox: simulated
    # The most it can cost is at the on-demand price: spot may rise to it, or fall back to it.
    assert q.ceiling_per_hour == Decimal("0.8048") * 2 and q.max_cost == Decimal("1.6096") * 4
    assert lines["at most"].startswith("at most    $6.44 = 4h max_duration × $1.61/h (on-demand: spot may rise")
    assert q.to_json()["price_ceiling_per_hour_usd"] == "1.6096"
    on_demand = quote(Config(path=None, base_dir=tmp_path, project="p", name="p", command="true",
                             provider="aws", gpus=4, template="aws-4gpu"), provider)
    table_date = json.loads(Path(pricing.__file__).with_name("prices.json").read_text())["retrieved"]
    assert on_demand.lifecycle == "on-demand" and on_demand.price_source == f"list price table of {table_date} (us-east-1)"
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fleet: warning:")]
    assert len(warnings) == 1, warnings          # moto has no Price List service; spot answered
    assert warnings[0].startswith("fleet: warning: AWS Price List API unavailable (")
    assert warnings[0].endswith(f"on-demand prices are the list price table of {table_date} (us-east-1)")


def test_a_launched_spot_machine_carries_its_own_azs_spot_price(live, request):
    from fleet.plan import make_plan
    project = "t-" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:10]
    provider = AWSProvider(outputs=live, sandbox=NoConnectAddressMap(), sleep=fast_sleep, ready_timeout_s=30)
    mix = provider.offers("aws-1gpu", 1)[0]
    plan = make_plan(provider="aws", mix=mix, max_duration_s=600, heartbeat_ttl_s=60, project=project,
                     user="tester")
    lease = provider.lease(plan, "l-spotprice", 60)
    try:
        (machine,) = lease.machines
        assert machine.spot and machine.price_per_hour == MOTO_SPOT
        assert re.fullmatch(rf"spot \$0\.00001/h \({machine.zone}, {DATE}\)", machine.provider_ref["price_source"])
        assert Decimal(lease.meta["price_per_hour"]) == MOTO_SPOT
    finally:
        provider.release(lease)
    assert not find_instances(provider.ec2, {"fleet:project": project}, states=("pending", "running"))
