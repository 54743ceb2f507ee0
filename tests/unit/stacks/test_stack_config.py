"""Stack config validation: one-line errors naming the key, before any resource is declared."""
from __future__ import annotations

import pulumi
import pytest
from fleet_stack_mocks import StackRun, config_values, run_program

from fleet.errors import ExitCode
from stacks.config import StackConfigError, parse_stack_config

T = {"name": "gpu", "instanceTypes": ["g5.xlarge"], "gpusPerMachine": 1, "image": "pytorch-cuda"}


def parse(**raw):
    base = {"sshCidrs": ["203.0.113.7/32"], "templates": [T]}
    base.update(raw)
    base = {k: v for k, v in base.items() if v is not None}
    return parse_stack_config(base, project="fleet", stack="dev", region=raw.pop("_region", "us-east-1"),
                              recipe_exists=lambda n: n in ("pytorch-cuda", "base-cpu"))


def error(**raw) -> str:
    with pytest.raises(StackConfigError) as err:
        parse(**raw)
    assert err.value.exit_code == ExitCode.USAGE
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_example_config_is_valid_and_complete():
    raw = {k.split(":", 1)[1]: v for k, v in config_values().items() if k.startswith("fleet:")}
    cfg = parse_stack_config(raw, project="fleet", stack="dev", region="us-east-1")
    assert [t.name for t in cfg.templates] == ["aws-8gpu", "aws-4gpu", "aws-1gpu"]
    assert cfg.templates[1].spot and not cfg.templates[0].spot
    assert cfg.templates[0].gpu_model == "A100"
    assert cfg.ssh_cidrs == ("203.0.113.7/32",) and not cfg.allow_world_ssh
    assert cfg.reaper.schedule == "rate(10 minutes)" and cfg.az_count == 3
    assert cfg.reaper.max_lease_hours == 168


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "::/0"])
def test_world_ssh_refused_without_the_loud_opt_in(cidr):
    msg = error(sshCidrs=["10.0.0.0/8", cidr])
    assert msg.startswith("fleet:sshCidrs: ") and "whole internet" in msg and "allowWorldSsh" in msg
    cfg = parse(sshCidrs=[cidr], allowWorldSsh="true")
    assert cfg.allow_world_ssh and cfg.ssh_cidrs == (cidr,)


@pytest.mark.parametrize("cidrs", [["0.0.0.0/1", "128.0.0.0/1"], ["64.0.0.0/2"], ["2.0.0.0/7"],
                                   ["::/1", "8000::/1"], ["2000::/3"], ["2001:db8::/31"],
                                   ["::ffff:0:0/96"]])
def test_world_ssh_split_into_wide_public_blocks_is_refused_too(cidrs):
    msg = error(sshCidrs=cidrs)
    assert msg.startswith(f"fleet:sshCidrs: {cidrs[0]} opens SSH to a public block wider than /")
    assert "allowWorldSsh" in msg
    assert parse(sshCidrs=cidrs, allowWorldSsh="true").ssh_cidrs == tuple(cidrs)


@pytest.mark.parametrize("cidr", ["1.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "fc00::/7",
                                  "2001:db8::/32", "203.0.113.0/24"])
def test_private_or_narrow_blocks_need_no_opt_in(cidr):
    assert parse(sshCidrs=[cidr]).ssh_cidrs == (cidr,)


@pytest.mark.parametrize("raw, key, words", [
    ({"sshCidrs": None}, "fleet:sshCidrs", "is required"),
    ({"sshCidrs": ["10.0.0.1/8"]}, "fleet:sshCidrs", "not a CIDR"),
    ({"sshCidrs": "[not json"}, "fleet:sshCidrs", "not valid JSON"),
    ({"sshCidr": ["1.2.3.4/32"]}, "fleet:sshCidr", "unknown stack config key"),
    ({"templates": []}, "fleet:templates", "at least one"),
    ({"templates": [{**T, "image": "nope"}]}, "fleet:templates[0].image", "no recipe 'nope'"),
    ({"templates": [{**T, "market": "cheap"}]}, "fleet:templates[0].market", "spot or on-demand"),
    ({"templates": [{**T, "instanceTypes": ["big box"]}]}, "fleet:templates[0].instanceTypes", "instance types"),
    ({"templates": [{k: v for k, v in T.items() if k != "gpusPerMachine"}]},
     "fleet:templates[0].gpusPerMachine", "is required"),
    ({"templates": [{**T, "diskGb": 2}]}, "fleet:templates[0].diskGb", "from 8"),
    ({"templates": [{**T, "gpus": 2}]}, "fleet:templates[0].gpus", "unknown template key"),
    ({"templates": [T, T]}, "fleet:templates", "used twice"),
    ({"vpcCidr": "8.8.0.0/16"}, "fleet:vpcCidr", "private"),
    ({"availabilityZones": ["eu-west-1a"]}, "fleet:availabilityZones", "zones in us-east-1"),
    ({"bucket": {"objectLockMode": "strict"}}, "fleet:bucket.objectLockMode", "GOVERNANCE"),
    ({"bucket": {"noncurrentDays": 0}}, "fleet:bucket.noncurrentDays", "whole number"),
    ({"reaper": {"schedule": "every 5 minutes"}}, "fleet:reaper.schedule", "EventBridge"),
    ({"allowWorldSsh": "yes"}, "fleet:allowWorldSsh", "true or false"),
])
def test_bad_values_name_their_key(raw, key, words):
    msg = error(**raw)
    assert msg.startswith(key + ": "), msg
    assert words in msg


# Values AWS refuses only half-way through `pulumi up`: each is one line before any resource.
@pytest.mark.parametrize("raw, key, words", [
    ({"reaper": {"schedule": "rate(0 minutes)"}}, "fleet:reaper.schedule", "at least 1"),
    ({"reaper": {"schedule": "rate(1 minutes)"}}, "fleet:reaper.schedule", "say rate(1 minute)"),
    ({"reaper": {"schedule": "rate(5 minute)"}}, "fleet:reaper.schedule", "say rate(5 minutes)"),
    ({"reaper": {"schedule": "cron(x)"}}, "fleet:reaper.schedule", "6 fields"),
    ({"reaper": {"logRetentionDays": 10}}, "fleet:reaper.logRetentionDays", "CloudWatch Logs"),
    ({"reaper": {"logRetentionDays": 1000}}, "fleet:reaper.logRetentionDays", "CloudWatch Logs"),
    ({"reaper": {"maxLeaseHours": 0}}, "fleet:reaper.maxLeaseHours", "whole number"),
    ({"availabilityZones": ["us-east-1a", "us-east-1a"]}, "fleet:availabilityZones", "us-east-1a twice"),
    ({"availabilityZones": ["us-east-10a"]}, "fleet:availabilityZones", "zones in us-east-1"),
    ({"availabilityZones": ["us-east-1"]}, "fleet:availabilityZones", "zones in us-east-1"),
    ({"availabilityZones": ["us-east-1 ; rm"]}, "fleet:availabilityZones", "zones in us-east-1"),
    ({"sshCidrs": [f"203.0.113.{i}/32" for i in range(60)]}, "fleet:sshCidrs", "at most 59"),
    ({"bucket": {"objectLockDays": 3650}}, "fleet:bucket.objectLockDays", "objectLock is not true"),
    ({"bucket": {"objectLock": False, "objectLockMode": "COMPLIANCE"}}, "fleet:bucket.objectLockMode",
     "objectLock is not true"),
    ({"templates": [{**T, "image": "../images/pytorch-cuda"}]}, "fleet:templates[0].image", "not a recipe name"),
    ({"templates": [{**T, "image": "/abs/pytorch-cuda"}]}, "fleet:templates[0].image", "not a recipe name"),
])
def test_values_aws_would_refuse_mid_deploy_are_refused_first(raw, key, words):
    msg = error(**raw)
    assert msg.startswith(key + ": "), msg
    assert words in msg


@pytest.mark.parametrize("raw", [
    {"reaper": {"schedule": "rate(1 minute)", "logRetentionDays": 14}},
    {"reaper": {"schedule": "rate(2 hours)"}}, {"reaper": {"schedule": "cron(0/15 * * * ? *)"}},
    {"availabilityZones": ["us-east-1a", "us-east-1f"]},
    {"sshCidrs": [f"203.0.113.{i}/32" for i in range(59)]},
    {"bucket": {"objectLock": False, "objectLockDays": 30, "objectLockMode": "GOVERNANCE"}},
    {"bucket": {"objectLock": True, "objectLockDays": 3650, "objectLockMode": "COMPLIANCE"}},
])
def test_valid_neighbours_still_pass(raw):
    parse(**raw)


def test_region_is_required_and_checked():
    with pytest.raises(StackConfigError, match="^aws:region: is required"):
        parse_stack_config({"sshCidrs": ["1.2.3.4/32"], "templates": [T]}, project="p", stack="s",
                           region=None, recipe_exists=lambda n: True)
    with pytest.raises(StackConfigError, match="not an AWS region"):
        parse_stack_config({"sshCidrs": ["1.2.3.4/32"], "templates": [T]}, project="p", stack="s",
                           region="mars-1", recipe_exists=lambda n: True)


def test_program_refuses_bad_config_before_declaring_anything():
    declared = StackRun()
    with pytest.raises(pulumi.RunError) as err:
        run_program({"fleet:sshCidrs": ["0.0.0.0/0"]}, run=declared)
    assert str(err.value).startswith("stack config: fleet:sshCidrs: 0.0.0.0/0 opens SSH")
    assert declared.resources == [] and declared.invokes == []


def test_program_accepts_world_ssh_with_the_opt_in():
    run = run_program({"fleet:sshCidrs": ["0.0.0.0/0"], "fleet:allowWorldSsh": True})
    rules = run.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    assert "0.0.0.0/0" in {r.inputs.get("cidrIpv4") for r in rules}


@pytest.mark.parametrize("stack", ["my_stack", "prod.eu", "-x", "a" * 43, "", "dev\n"])
def test_a_stack_name_aws_would_refuse_half_way_through_up_is_refused_first(stack):
    """Red-team finding: `_` reached the bucket prefix and `.` the Lambda's name, both refused by AWS
    only during `pulumi up`, after other resources were made."""
    with pytest.raises(StackConfigError, match="stack: .* must be 1-42 letters, digits and hyphens"):
        parse_stack_config({"sshCidrs": ["1.2.3.4/32"], "templates": [T]}, project="p", stack=stack,
                           region="us-east-1")


@pytest.mark.parametrize("stack", ["dev", "Prod", "9lives", "team-a-" + "x" * 35])
def test_stack_names_aws_accepts_are_kept(stack):
    assert parse_stack_config({"sshCidrs": ["1.2.3.4/32"], "templates": [T]}, project="p", stack=stack,
                              region="us-east-1")
