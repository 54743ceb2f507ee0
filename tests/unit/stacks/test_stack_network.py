"""Network component under Pulumi mocks: VPC, one subnet per AZ, internet route, S3 gateway."""
from __future__ import annotations

import ipaddress

from fleet_stack_mocks import TAGS, run_component

from stacks.components.network import Network, NetworkArgs, subnet_cidrs


def _declare(azs=("us-east-1a", "us-east-1b", "us-east-1c")):
    def build():
        net = Network("n", NetworkArgs(region="us-east-1", vpc_cidr="10.42.0.0/16",
                                       availability_zones=tuple(azs), tags=TAGS))
        return net, net.subnet_ids
    return run_component(build)


def test_one_public_subnet_per_zone_in_order_without_overlap():
    run, subnet_ids = _declare()
    subnets = sorted(run.of_type("aws:ec2/subnet:Subnet"), key=lambda r: r.name)   # registration order varies
    assert [s.inputs["availabilityZone"] for s in subnets] == ["us-east-1a", "us-east-1b", "us-east-1c"]
    assert all(s.inputs["mapPublicIpOnLaunch"] for s in subnets)
    nets = [ipaddress.ip_network(s.inputs["cidrBlock"]) for s in subnets]
    assert all(n.subnet_of(ipaddress.ip_network("10.42.0.0/16")) for n in nets)
    assert not any(a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1:])
    # the exported map keeps the AZ order the provider tries
    assert list(subnet_ids) == ["us-east-1a", "us-east-1b", "us-east-1c"]
    assert len(run.of_type("aws:ec2/routeTableAssociation:RouteTableAssociation")) == 3


def test_internet_route_and_s3_gateway_endpoint():
    run, _ = _declare()
    route = run.one("aws:ec2/route:Route")
    assert route.inputs["destinationCidrBlock"] == "0.0.0.0/0"
    assert route.inputs["gatewayId"].endswith("-igw-id")
    endpoint = run.one("aws:ec2/vpcEndpoint:VpcEndpoint")
    assert endpoint.inputs["serviceName"] == "com.amazonaws.us-east-1.s3"
    assert endpoint.inputs["vpcEndpointType"] == "Gateway"
    assert endpoint.inputs["routeTableIds"] == ["n-public-id"]
    vpc = run.one("aws:ec2/vpc:Vpc")
    assert vpc.inputs["enableDnsHostnames"] is True


def test_children_are_parented_to_the_component():
    run, _ = _declare(azs=("us-east-1a",))
    comp = run.one("fleet:stacks:Network")
    assert all(r.parent == comp.urn for r in run.custom)


def test_subnet_split_sizes():
    assert subnet_cidrs("10.0.0.0/16", 1) == ["10.0.0.0/17"]
    assert subnet_cidrs("10.0.0.0/16", 3) == ["10.0.0.0/18", "10.0.64.0/18", "10.0.128.0/18"]
    assert len(subnet_cidrs("10.0.0.0/24", 6)) == 6
