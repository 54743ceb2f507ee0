"""Network: a VPC with one public subnet per availability zone, internet access, and an S3 gateway
endpoint (snapshot traffic to the bucket stays inside AWS and costs no NAT or egress).

Machines get public addresses because the controller reaches them over SSH directly (restricted by
the access component's security group); several AZs let the provider move on when one is out of
capacity.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from .common import TYPE_PREFIX, child


@dataclass(frozen=True)
class NetworkArgs:
    region: str
    vpc_cidr: str
    availability_zones: tuple[str, ...]
    tags: dict[str, str]


def subnet_cidrs(vpc_cidr: str, count: int) -> list[str]:
    """Split the VPC block into `count` equal subnets, as large as a power-of-two split allows."""
    net = ipaddress.ip_network(vpc_cidr)
    bits = max(1, (count - 1).bit_length())
    return [str(s) for s in list(net.subnets(prefixlen_diff=bits))[:count]]


class Network(pulumi.ComponentResource):
    vpc: aws.ec2.Vpc
    subnets: dict[str, aws.ec2.Subnet]       # AZ → subnet, in the order the provider should try

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TYPE_PREFIX}:Network", name, None, opts)
        tags = args.tags
        self.vpc = aws.ec2.Vpc(f"{name}-vpc", cidr_block=args.vpc_cidr, enable_dns_support=True,
                               enable_dns_hostnames=True, tags={**tags, "Name": f"{name}-vpc"},
                               opts=child(self))
        self.igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=self.vpc.id,
                                           tags={**tags, "Name": f"{name}-igw"}, opts=child(self))
        self.route_table = aws.ec2.RouteTable(f"{name}-public", vpc_id=self.vpc.id,
                                              tags={**tags, "Name": f"{name}-public"}, opts=child(self))
        self.default_route = aws.ec2.Route(f"{name}-default-route", route_table_id=self.route_table.id,
                                           destination_cidr_block="0.0.0.0/0",
                                           gateway_id=self.igw.id, opts=child(self))
        self.subnets = {}
        cidrs = subnet_cidrs(args.vpc_cidr, len(args.availability_zones))
        for az, cidr in zip(args.availability_zones, cidrs):
            subnet = aws.ec2.Subnet(f"{name}-{az}", vpc_id=self.vpc.id, cidr_block=cidr,
                                    availability_zone=az, map_public_ip_on_launch=True,
                                    tags={**tags, "Name": f"{name}-{az}", "fleet:az": az},
                                    opts=child(self))
            aws.ec2.RouteTableAssociation(f"{name}-{az}-public", subnet_id=subnet.id,
                                          route_table_id=self.route_table.id, opts=child(self))
            self.subnets[az] = subnet
        self.s3_endpoint = aws.ec2.VpcEndpoint(
            f"{name}-s3", vpc_id=self.vpc.id, service_name=f"com.amazonaws.{args.region}.s3",
            vpc_endpoint_type="Gateway", route_table_ids=[self.route_table.id],
            tags={**tags, "Name": f"{name}-s3"}, opts=child(self))
        self.subnet_ids = pulumi.Output.all(**{az: s.id for az, s in self.subnets.items()})
        self.register_outputs({"vpc_id": self.vpc.id, "subnet_ids": self.subnet_ids,
                               "s3_endpoint_id": self.s3_endpoint.id})
