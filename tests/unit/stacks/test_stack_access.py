"""Access component under Pulumi mocks: SSH only from the configured CIDRs."""
from __future__ import annotations

from fleet_stack_mocks import TAGS, run_component

from stacks.components.access import Access, AccessArgs


def _declare(cidrs):
    def build():
        access = Access("a", AccessArgs(vpc_id="vpc-1", ssh_cidrs=tuple(cidrs), tags=TAGS))
        return access, access.security_group.id
    return run_component(build)


def test_one_ssh_rule_per_cidr_v4_and_v6():
    run, sg_id = _declare(["203.0.113.7/32", "2001:db8::/48"])
    rules = sorted((r for r in run.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
                    if r.inputs.get("fromPort") == 22), key=lambda r: r.name)   # registration order varies
    assert [(r.inputs.get("cidrIpv4"), r.inputs.get("cidrIpv6")) for r in rules] == [
        ("203.0.113.7/32", None), (None, "2001:db8::/48")]
    assert all(r.inputs["toPort"] == 22 and r.inputs["ipProtocol"] == "tcp" for r in rules)
    assert all(r.inputs["securityGroupId"] == sg_id for r in rules)


def test_fleet_machines_reach_each_other_but_nothing_else_gets_in():
    run, sg_id = _declare(["198.51.100.0/24"])
    ingress = run.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    intra = [r for r in ingress if r.inputs.get("referencedSecurityGroupId")]
    assert len(intra) == 1 and intra[0].inputs["referencedSecurityGroupId"] == sg_id
    # every other ingress rule is an SSH rule from an allowed CIDR
    others = [r for r in ingress if r not in intra]
    assert {r.inputs["cidrIpv4"] for r in others} == {"198.51.100.0/24"}
    sg = run.one("aws:ec2/securityGroup:SecurityGroup")
    assert not sg.inputs.get("ingress"), "no inline rules: each rule is its own resource"
