"""A lease id is fleet's only in its own stack: another stack in the same account and region (a
teammate's `prod`, or anyone who copies the tags) may carry an instance tagged with the same
`fleet:lease`. Releasing, describing or retrying the lease here ended or adopted that instance."""
from __future__ import annotations

import pytest

from fleet.plan import make_plan
from tests.fixtures.aws import provider_on_a_new_stack


@pytest.fixture
def provider(moto_server, fleet_home):
    with provider_on_a_new_stack(moto_server) as made:
        yield made


def _other_stacks_instance(ec2, lease_id: str) -> str:
    image = ec2.describe_images(Owners=["amazon"], MaxResults=5)["Images"][0]["ImageId"]
    tags = {"fleet:lease": lease_id, "fleet:stack": "someone-elses-prod", "fleet:user": "bob"}
    return ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro",
                             TagSpecifications=[{"ResourceType": "instance", "Tags": [
                                 {"Key": k, "Value": v} for k, v in tags.items()]}])["Instances"][0]["InstanceId"]


def _state(ec2, instance_id: str) -> str:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]


def _plan(provider):
    return make_plan(provider="aws", mix=provider.offers("aws-1gpu", 1)[0], max_duration_s=600, heartbeat_ttl_s=60,
                     project="proj", user="alice")


def test_releasing_a_lease_leaves_another_stacks_instance_with_the_same_lease_id_running(provider):
    lease = provider.lease(_plan(provider), "l-a1b2c3d4", 60)
    theirs = _other_stacks_instance(provider.ec2, lease.id)
    assert [s.machine_id for s in provider.describe(lease)] == [lease.machines[0].id]
    provider.release(lease)
    assert _state(provider.ec2, lease.machines[0].id) == "terminated"
    assert _state(provider.ec2, theirs) == "running"


def test_a_retried_lease_neither_adopts_nor_ends_another_stacks_instance(provider):
    theirs = _other_stacks_instance(provider.ec2, "l-0badc0de")
    lease = provider.lease(_plan(provider), "l-0badc0de", 60)
    assert theirs not in [m.id for m in lease.machines]
    assert _state(provider.ec2, theirs) == "running"
    provider.release(lease)
    assert _state(provider.ec2, theirs) == "running"
