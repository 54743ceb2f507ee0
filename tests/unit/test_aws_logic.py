"""Pure logic of the AWS provider: mixes, prices, attempt order, tokens, user-data, reaper judgement."""
from __future__ import annotations

import base64
import gzip
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from fleet.errors import ConfigError, InfrastructureError, UsageError
from fleet.providers.aws.catalog import InstanceType, load_prices, offers, template_gpu_unit
from fleet.providers.aws.launch import client_token, plan_attempts, run_params
from fleet.providers.aws.outputs import TemplateOutputs
from fleet.providers.aws.reap import judge
from fleet.providers.aws.userdata import USER_DATA_LIMIT, BootSpec, render
from fleet.remote.agent import agent_source

CATALOG = {n: InstanceType(n, g, m, 0, 0, 0) for n, g, m in [
    ("p4d.24xlarge", 8, "A100"), ("g5.12xlarge", 4, "A10G"), ("g5.xlarge", 1, "A10G"), ("g6.48xlarge", 8, "L4")]}
MIX = TemplateOutputs("mix", "lt-1", ("p4d.24xlarge", "g5.12xlarge"), 8, spot=True)


def test_shipped_price_table_has_source_date_and_gpu_families():
    table = load_prices()
    assert "aws.amazon.com" in table.source and re.fullmatch(r"\d{4}-\d{2}-\d{2}", table.retrieved)
    for family in ("p3.", "p4d.", "p5.", "g4dn.", "g5.", "g6."):
        assert any(k.startswith(family) for k in table.prices), family
    assert table.price("g5.xlarge") == Decimal("1.006")
    with pytest.raises(ConfigError, match="not a number"):
        load_prices({"g5.xlarge": "cheap"})


def test_offers_for_8_and_16_gpus_cheapest_first():
    table = load_prices()
    eight = offers(MIX, 8, CATALOG, table)
    assert [(o.instance_type, o.machines) for o in eight] == [("g5.12xlarge", 2), ("p4d.24xlarge", 1)]
    assert eight[0].price_per_hour == Decimal("11.344") and eight[0].gpus == 8
    assert [(o.instance_type, o.machines) for o in offers(MIX, 16, CATALOG, table)] == \
        [("g5.12xlarge", 4), ("p4d.24xlarge", 2)]
    assert [(o.instance_type, o.machines) for o in offers(MIX, 4, CATALOG, table)] == [("g5.12xlarge", 1)]
    assert template_gpu_unit(MIX, CATALOG) == 4


def test_no_mix_names_the_fix():
    with pytest.raises(UsageError) as err:
        offers(MIX, 6, CATALOG, load_prices())
    assert "exactly 6 GPUs" in str(err.value) and "multiple of 4" in str(err.value)
    with pytest.raises(UsageError):
        offers(MIX, 0, CATALOG, load_prices())


def test_unknown_price_sorts_last_and_says_so():
    tpl = TemplateOutputs("x", "lt", ("g6.48xlarge", "p4d.24xlarge"), 8)
    table = load_prices()
    table.prices.pop("g6.48xlarge")
    got = offers(tpl, 8, CATALOG, table)
    assert got[-1].instance_type == "g6.48xlarge" and got[-1].price_per_hour is None
    assert "[prices]" in got[-1].price_source


def test_attempt_order_spot_everywhere_then_on_demand_and_stable_tokens():
    subnets = {"a": "s-a", "b": "s-b"}
    attempts = plan_attempts(offers(MIX, 8, CATALOG, load_prices()), subnets, spot_first=True)
    assert [(a.spot, a.offer.instance_type, a.az) for a in attempts] == [
        (True, "g5.12xlarge", "a"), (True, "g5.12xlarge", "b"), (True, "p4d.24xlarge", "a"),
        (True, "p4d.24xlarge", "b"), (False, "g5.12xlarge", "a"), (False, "g5.12xlarge", "b"),
        (False, "p4d.24xlarge", "a"), (False, "p4d.24xlarge", "b")]
    tokens = {client_token("l-1", a) for a in attempts}
    assert len(tokens) == len(attempts) and all(len(t) <= 64 for t in tokens)
    assert client_token("l-1", attempts[0]) == client_token("l-1", attempts[0]) != client_token("l-2", attempts[0])
    params = run_params(attempts[0], "lt-1", "#!/bin/sh", {"fleet:lease": "l-1"}, "tok",
                        {"security_group_id": "sg-1", "public_ip": True})
    assert params["MinCount"] == params["MaxCount"] == 2
    assert params["MetadataOptions"]["HttpTokens"] == "required"
    assert params["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert params["InstanceMarketOptions"]["MarketType"] == "spot"
    assert params["SubnetId"] == "s-a" and params["SecurityGroupIds"] == ["sg-1"]
    assert {s["ResourceType"] for s in params["TagSpecifications"]} == {"instance", "volume"}


def _spec(**kw):
    base = dict(lease_id="l-1", authorized_key="ssh-ed25519 AAAAclient fleet", host_private_key=
                "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n",
                host_public_key="ssh-ed25519 AAAAhost", deadline_s=300, max_duration_s=3600,
                agent_source=agent_source())
    base.update(kw)
    return BootSpec(**base)


def test_user_data_pins_host_key_and_starts_the_watchdog():
    text = render(_spec())
    assert len(text.encode()) <= USER_DATA_LIMIT and text.startswith("#!/bin/bash")
    assert "BEGIN OPENSSH PRIVATE KEY" in text and "ssh-ed25519 AAAAhost" in text
    assert "ssh-ed25519 AAAAclient" in text and "HostKey /etc/ssh/ssh_host_ed25519_key" in text
    assert re.search(r"agent\.py watchdog .*--ttl 300 --max 3600 --poweroff", text)
    assert "shutdown -P +65" in text                   # 60 min max + 5 min grace, never extended
    assert "SetEnv SHLVL=1\\nPermitUserRC no" in text     # a run's ~/.bashrc, ~/.ssh/rc never run later
    packed = re.search(r"echo (\S+) \| base64 -d \| gunzip > \S+/agent\.py", text).group(1)
    assert gzip.decompress(base64.b64decode(packed)).decode() == agent_source()


def test_user_data_carries_telemetry_only_for_a_watchdog_that_samples_it():
    from fleet.remote.agent import AGENT_PATH
    telemetry = AGENT_PATH.with_name("telemetry.py").read_text()
    text = render(_spec(telemetry_source=telemetry))      # what the provider passes: no sampling interval
    assert len(text.encode()) <= USER_DATA_LIMIT and "telemetry.py" not in text
    sampled = render(_spec(agent_source="print('agent')\n", telemetry_source=telemetry, telemetry_interval_s=30))
    assert "/telemetry.py" in sampled and "--telemetry-interval 30" in sampled


def test_user_data_over_the_ec2_limit_is_refused():
    import os
    with pytest.raises(InfrastructureError, match="over EC2"):
        render(_spec(agent_source=base64.b64encode(os.urandom(20000)).decode()))


NOW = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)


def _inst(lease="l-1", expires=NOW + timedelta(hours=1), launched=NOW - timedelta(hours=1), user="u"):
    tags = [{"Key": "fleet:lease", "Value": lease}, {"Key": "fleet:user", "Value": user}]
    if expires is not None:
        tags.append({"Key": "fleet:expires-at", "Value": expires.isoformat()})
    return {"InstanceId": "i-1", "Tags": tags, "LaunchTime": launched, "State": {"Name": "running"}}


def test_reaper_judgement():
    assert judge(_inst(), {"l-1"}, NOW) is None
    assert "not live" in judge(_inst(), set(), NOW)
    assert "expired" in judge(_inst(expires=NOW - timedelta(seconds=1)), {"l-1"}, NOW)
    assert judge(_inst(), None, NOW) is None                                   # Lambda: expiry only
    assert judge(_inst(launched=NOW - timedelta(minutes=2)), set(), NOW) is None   # young: spared
    assert judge(_inst(user="alice"), set(), NOW, owner="bob") is None
    # another FLEET_HOME's lease (a parallel CI job: same login, its own state): never "not live" here
    assert judge(_inst(user="runner"), set(), NOW, owner="runner", known_lease_ids={"l-other"}) is None
    assert "not live" in judge(_inst(user="runner"), set(), NOW, owner="runner", known_lease_ids={"l-1"})
    assert "no readable" in judge(_inst(expires=None, launched=NOW - timedelta(days=3)), None, NOW)
