"""Policies over the whole default stack (the example config, run as `pulumi up` would run it).

Each rule looks at every resource of the kind it governs, so a resource added later is covered
without touching these tests.
"""
from __future__ import annotations

import ipaddress
import json

import pulumi_aws as aws
import pytest
from fleet_stack_mocks import PROJECT_TAGS, run_program

WORLD = {"0.0.0.0/0", "::/0"}
POLICY_INPUTS = ("policy", "assumeRolePolicy")


def _as_list(v):
    return [v] if isinstance(v, str) else list(v or [])


def _opens_ssh(proto, from_port, to_port) -> bool:
    if str(proto) in ("-1", "all"):
        return True
    return str(proto) in ("tcp", "6") and (from_port or 0) <= 22 <= (to_port or 65535)


def _world(cidr) -> bool:
    return cidr is not None and ipaddress.ip_network(cidr).prefixlen == 0


@pytest.fixture(scope="module", params=["default", "all-options"])
def stack(request, default_stack):
    if request.param == "default":
        return default_stack
    # every optional resource switched on, so the policies see those too
    return run_program({"fleet:bucket": {"objectLock": True, "objectLockDays": 7},
                        "fleet:sshCidrs": ["203.0.113.0/24", "2001:db8::/32"]})


def test_no_security_group_rule_opens_ssh_to_the_world(stack):
    checked = 0
    for r in stack.custom:
        rules = []
        if r.type == "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule":
            rules = [(r.inputs.get("ipProtocol"), r.inputs.get("fromPort"), r.inputs.get("toPort"),
                      [r.inputs.get("cidrIpv4"), r.inputs.get("cidrIpv6")])]
        elif r.type == "aws:ec2/securityGroupRule:SecurityGroupRule" and r.inputs.get("type") == "ingress":
            rules = [(r.inputs.get("protocol"), r.inputs.get("fromPort"), r.inputs.get("toPort"),
                      r.inputs.get("cidrBlocks", []) + r.inputs.get("ipv6CidrBlocks", []))]
        elif r.type == "aws:ec2/securityGroup:SecurityGroup":
            rules = [(i.get("protocol"), i.get("fromPort"), i.get("toPort"),
                      i.get("cidrBlocks", []) + i.get("ipv6CidrBlocks", []))
                     for i in r.inputs.get("ingress") or []]
        for proto, lo, hi, cidrs in rules:
            checked += 1
            if _opens_ssh(proto, lo, hi):
                assert not any(_world(c) for c in cidrs), f"{r.name} opens SSH to the world"
    assert checked >= 2


def test_every_launch_template_requires_imdsv2_and_encrypts(stack):
    lts = stack.of_type("aws:ec2/launchTemplate:LaunchTemplate")
    assert len(lts) == 3
    for lt in lts:
        assert lt.inputs["metadataOptions"]["httpTokens"] == "required", lt.name
        assert lt.inputs["instanceInitiatedShutdownBehavior"] == "terminate", lt.name
        mappings = lt.inputs["blockDeviceMappings"]
        assert mappings and all(m["ebs"]["encrypted"] == "true" for m in mappings), lt.name


def test_every_bucket_blocks_public_access_and_encrypts(stack):
    buckets = stack.of_type("aws:s3/bucket:Bucket")
    assert buckets
    by_bucket = {}
    for r in stack.custom:
        if r.type.startswith("aws:s3/") and "bucket" in r.inputs:
            by_bucket.setdefault(r.inputs["bucket"], {})[r.type.rsplit(":", 1)[1]] = r.inputs
    for b in buckets:
        bucket_id = (b.inputs.get("bucketPrefix") or "bucket-") + "abc123"   # the mocks' id
        parts = by_bucket.get(bucket_id, {})
        pab = parts.get("BucketPublicAccessBlock")
        assert pab and all(pab[k] is True for k in ("blockPublicAcls", "blockPublicPolicy",
                                                    "ignorePublicAcls", "restrictPublicBuckets"))
        sse = parts.get("BucketServerSideEncryptionConfiguration")
        assert sse and sse["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"]
        assert not b.inputs.get("acl") or b.inputs["acl"] == "private"


def _statements(stack):
    for r in stack.custom:
        for key in POLICY_INPUTS:
            text = r.inputs.get(key)
            if isinstance(text, str) and text.strip().startswith("{"):
                for s in _as_list(json.loads(text)["Statement"]):
                    yield r, s


def test_no_iam_policy_allows_star_actions_on_star_resources(stack):
    seen = 0
    for r, s in _statements(stack):
        seen += 1
        if s.get("Effect") != "Allow":
            continue
        actions = _as_list(s.get("Action"))
        resources = _as_list(s.get("Resource"))
        assert "NotAction" not in s and "NotResource" not in s, r.name
        assert not any(a == "*" or a.endswith(":*") for a in actions), f"{r.name}: {actions}"
        if "*" in resources:
            # Only read-only discovery calls (EC2 Describe* has no resource-level scoping) on "*".
            assert all(a.split(":")[1].startswith(("Describe", "List", "Get")) for a in actions), \
                f"{r.name}: {actions} on *"
    assert seen >= 6


def _taggable(type_token: str) -> bool:
    """Whether the pulumi_aws resource class for this type token accepts tags."""
    pkg, mod, cls = type_token.split(":")
    module = getattr(aws, {"lambda": "lambda_"}.get(mod.split("/")[0], mod.split("/")[0]))
    return isinstance(getattr(getattr(module, cls), "tags", None), property)


def test_every_taggable_resource_carries_the_project_tags(stack):
    untaggable = set()
    for r in stack.custom:
        if not _taggable(r.type):
            untaggable.add(r.type)
            continue
        tags = r.inputs.get("tags") or {}
        missing = [t for t in PROJECT_TAGS if not tags.get(t)]
        assert not missing, f"{r.type} {r.name} lacks {missing}"
        assert tags["fleet:stack"] == "test"
    # sanity: the check knows the difference (e.g. routes and bucket sub-configs take no tags)
    assert "aws:ec2/route:Route" in untaggable and "aws:ec2/vpc:Vpc" not in untaggable


def test_every_resource_belongs_to_a_component(stack):
    components = {r.urn: r for r in stack.resources if not r.custom}
    assert {c.type for c in components.values()} == {
        f"fleet:stacks:{n}" for n in ("Network", "Access", "Identity", "Storage", "Templates", "Guard", "Controller")}
    for r in stack.custom:
        assert r.parent in components, f"{r.type} {r.name} is not parented to a component"


def test_resource_count_is_what_the_docs_say(default_stack):
    # docs/stacks.md quotes this figure: update both together.
    assert len(default_stack.custom) == 35 and len(default_stack.resources) == 42
