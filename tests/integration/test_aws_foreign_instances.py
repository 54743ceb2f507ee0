"""fleet never ends an instance that is not its own (red-team findings, against moto): a lease id
with an EC2 wildcard in a planted state row ("l-*") matched every lease's instances and `fleet down`
terminated a teammate's; the reaper (`fleet reap` and the scheduled Lambda) judged every instance
with a `fleet:lease` tag, another stack's or another team's too; one instance the caller may not end
spared every other in its batch; and `fleet reap --all-users` ended a running image bake."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from fleet.errors import FleetError
from fleet.models import Lease
from fleet.plan import make_plan
from fleet.providers.aws.reap import judge, reap
from tests.fixtures.aws import provider_on_a_new_stack


@pytest.fixture
def provider(moto_server, fleet_home):
    with provider_on_a_new_stack(moto_server) as made:
        yield made


def _plan(provider, user="alice"):
    return make_plan(provider="aws", mix=provider.offers("aws-1gpu", 1)[0], max_duration_s=600, heartbeat_ttl_s=60,
                     project="proj", user=user)


def _raw(ec2, tags: dict[str, str]) -> str:
    image = ec2.describe_images(Owners=["amazon"], MaxResults=5)["Images"][0]["ImageId"]
    return ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro",
                             TagSpecifications=[{"ResourceType": "instance", "Tags": [
                                 {"Key": k, "Value": v} for k, v in tags.items()]}])["Instances"][0]["InstanceId"]


def _state(ec2, instance_id: str) -> str:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]


@pytest.mark.parametrize("planted_id", ["l-*", "l-a1b2c3d?"])
def test_a_lease_id_with_a_wildcard_in_a_planted_row_ends_nobodys_instances(provider, planted_id):
    from fleet.leases import down
    from fleet.state import open_state
    victim = provider.lease(_plan(provider, "alice"), "l-a1b2c3d4", 60)
    planted = Lease(id=planted_id, provider="aws", template="aws-1gpu", machines=[], created_at=victim.created_at,
                    deadline=victim.deadline, max_deadline=victim.max_deadline, project="x", user="tester",
                    heartbeat_ttl_s=60, meta={"region": "us-east-1"})
    state = open_state()
    state.save_lease(planted)          # what a teammate who can write the shared state can do
    with pytest.raises(FleetError):
        down([], all_leases=True, state=state, user="tester")
    with pytest.raises(FleetError, match="not a plain name"):
        provider.release(planted)
    assert _state(provider.ec2, victim.machines[0].id) == "running"
    provider.release(victim)


def test_the_reaper_judges_only_its_own_stacks_instances(provider):
    ec2, stack = provider.ec2, provider.outputs.stack
    assert stack
    later = datetime.now(timezone.utc) + timedelta(hours=49)
    foreign = _raw(ec2, {"fleet:lease": "build-42", "team": "other"})                # not fleet's at all
    other_stack = _raw(ec2, {"fleet:lease": "l-99999999", "fleet:stack": "prod", "fleet:user": "tester",
                             "fleet:expires-at": "2000-01-01T00:00:00Z"})
    ours = _raw(ec2, {"fleet:lease": "l-88888888", "fleet:stack": stack, "fleet:expires-at": "2000-01-01T00:00:00Z"})
    lambda_actions = reap(ec2, None, now=later, stack=stack)                          # the Lambda of this stack
    cli_actions = reap(ec2, {"l-live"}, now=later, owner="tester", stack=stack)       # `fleet reap`
    assert {a["instance_id"] for a in lambda_actions} == {ours}
    assert {a["instance_id"] for a in cli_actions} <= {ours}
    assert _state(ec2, foreign) == "running" and _state(ec2, other_stack) == "running"


def test_an_instance_the_caller_may_not_end_does_not_spare_the_rest_of_its_batch():
    from botocore.exceptions import ClientError

    class Refusing:
        terminated: list[str] = []

        def get_paginator(self, _name):
            now = datetime.now(timezone.utc)
            page = {"Reservations": [{"Instances": [
                {"InstanceId": f"i-{n}", "State": {"Name": "running"}, "LaunchTime": now - timedelta(hours=1),
                 "Tags": [{"Key": "fleet:lease", "Value": "l-x"}, {"Key": "fleet:stack", "Value": "s"},
                          {"Key": "fleet:expires-at", "Value": "2000-01-01T00:00:00Z"}]} for n in range(3)]}]}
            return type("Pages", (), {"paginate": lambda self, **kw: [page]})()

        def terminate_instances(self, InstanceIds):
            if "i-0" in InstanceIds:
                raise ClientError({"Error": {"Code": "UnauthorizedOperation", "Message": "no"}}, "TerminateInstances")
            self.terminated += InstanceIds
    ec2 = Refusing()
    actions = reap(ec2, None, stack="s")
    assert sorted(ec2.terminated) == ["i-1", "i-2"]
    assert {a["instance_id"]: a["action"] for a in actions}["i-0"] == "refused"


def test_a_running_image_bake_is_not_a_lease_that_is_not_live():
    now = datetime.now(timezone.utc)
    builder = {"InstanceId": "i-b", "LaunchTime": now - timedelta(minutes=30), "State": {"Name": "running"},
               "Tags": [{"Key": "fleet:lease", "Value": "bake-base-gpu-1a2b3c4d"},
                        {"Key": "fleet:role", "Value": "image-builder"},
                        {"Key": "fleet:expires-at", "Value": (now + timedelta(hours=1)).isoformat()}]}
    assert judge(builder, {"l-live"}, now, None) is None
    assert judge(builder, {"l-live"}, now + timedelta(hours=2), None).startswith("expired")


def test_a_planted_lease_id_does_not_blank_every_other_lease_in_status(provider):
    """`fleet status` asks about all leases at once: one id with a wildcard made the whole call refuse,
    and every AWS lease showed its machines unknown."""
    victim = provider.lease(_plan(provider, "alice"), "l-a1b2c3d4", 60)
    planted = Lease(id="l-*", provider="aws", template="aws-1gpu", machines=[], created_at=victim.created_at,
                    deadline=victim.deadline, max_deadline=victim.max_deadline, project="x", user="tester",
                    heartbeat_ttl_s=60, meta={"region": "us-east-1"})
    states = provider.describe_leases([victim, planted])
    assert [s.state for s in states[victim.id]] == ["running"] and states["l-*"] == []
    provider.release(victim)
