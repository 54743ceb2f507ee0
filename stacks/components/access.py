"""Access: the machines' security group. SSH only from the configured CIDRs; machines of one fleet
reach each other on every port (multi-node training: NCCL, torch.distributed rendezvous); outbound
is open (package mirrors, the snapshot bucket, telemetry home).

World-open SSH is refused by stack config validation unless `fleet:allowWorldSsh` is set; this
component does not second-guess a validated config, it just declares what it was given.
"""
from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from .common import TYPE_PREFIX, child

SSH_PORT = 22


@dataclass(frozen=True)
class AccessArgs:
    vpc_id: pulumi.Input[str]
    ssh_cidrs: tuple[str, ...]
    tags: dict[str, str]


class Access(pulumi.ComponentResource):
    security_group: aws.ec2.SecurityGroup

    def __init__(self, name: str, args: AccessArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TYPE_PREFIX}:Access", name, None, opts)
        tags = args.tags
        self.security_group = aws.ec2.SecurityGroup(
            f"{name}-machines", vpc_id=args.vpc_id,
            description="fleet machines: SSH from allowed CIDRs, all traffic within the fleet",
            tags={**tags, "Name": f"{name}-machines"}, opts=child(self))
        sg_id = self.security_group.id
        self.ssh_rules = []
        for i, cidr in enumerate(args.ssh_cidrs):
            family = {"cidr_ipv6": cidr} if ":" in cidr else {"cidr_ipv4": cidr}
            self.ssh_rules.append(aws.vpc.SecurityGroupIngressRule(
                f"{name}-ssh-{i}", security_group_id=sg_id, ip_protocol="tcp", from_port=SSH_PORT,
                to_port=SSH_PORT, description=f"SSH from {cidr}", tags=tags, opts=child(self),
                **family))
        self.intra_fleet = aws.vpc.SecurityGroupIngressRule(
            f"{name}-intra-fleet", security_group_id=sg_id, ip_protocol="-1",
            referenced_security_group_id=sg_id, description="machines of this fleet talk freely",
            tags=tags, opts=child(self))
        self.egress = [
            aws.vpc.SecurityGroupEgressRule(f"{name}-egress-v4", security_group_id=sg_id,
                                            ip_protocol="-1", cidr_ipv4="0.0.0.0/0",
                                            description="outbound", tags=tags, opts=child(self)),
        ]
        self.register_outputs({"security_group_id": sg_id})
