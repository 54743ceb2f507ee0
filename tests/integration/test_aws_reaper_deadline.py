"""A dead controller's AWS instances end at the lease's heartbeat deadline, not at launch + max
duration (moto server): the heartbeat keeps a `fleet:deadline` tag on the lease's instances (one
CreateTags per beat for the whole lease), the reaper ends instances whose deadline has passed in one
filtered DescribeInstances per pass however many leases there are, and `fleet status` calls such a
lease orphaned."""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from fleet.heartbeat import Heartbeat, deadline_publisher, elapsed
from fleet.leases import lease_view
from fleet.models import Lease, Machine, MachineState
from fleet.providers.aws import reap as reap_mod
from fleet.providers.aws.provider import AWSProvider, iso_tag
from fleet.providers.aws.reap import DEADLINE_GRACE, TAG_DEADLINE, lambda_handler, reap
from tests.fixtures.aws import point_boto3_at, reset_moto
from tests.integration.test_aws_reaper import launch, states

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def ec2(moto_server):
    import boto3
    with pytest.MonkeyPatch.context() as mp:
        point_boto3_at(mp, moto_server)
        client = boto3.client("ec2", region_name="us-east-1")
        yield client
        left = [i["InstanceId"] for i in reap_mod.fleet_instances(client)]
        if left:
            client.terminate_instances(InstanceIds=left)
    reset_moto(moto_server)


class Calls:
    """EC2 API calls made through a client, by operation name."""

    def __init__(self, client):
        self.counts: Counter = Counter()
        client.meta.events.register("before-call.ec2.*", self)

    def __call__(self, model, **_kw):
        self.counts[model.name] += 1


def _lease(ids: list[str], lease_id: str, deadline: datetime) -> Lease:
    now = datetime.now(timezone.utc)
    machines = [Machine(id=f"{lease_id}-n{r}", lease_id=lease_id, node_rank=r, host="127.0.0.1", port=1, user="u",
                        key_path="k", host_key="h", workdir="/w", provider_ref={"instance_id": iid})
                for r, iid in enumerate(ids)]
    return Lease(id=lease_id, provider="aws", template="aws-1gpu", machines=machines, created_at=now,
                 deadline=deadline, max_deadline=now + timedelta(hours=4), heartbeat_ttl_s=30)


def _tag(client, iid: str, key: str) -> str | None:
    inst = client.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    return {t["Key"]: t["Value"] for t in inst.get("Tags", [])}.get(key)


def test_each_beat_tags_the_whole_lease_with_one_create_tags_call(ec2):
    now = datetime.now(timezone.utc)
    ids = launch(ec2, "l-beating", now + timedelta(hours=4), count=3)
    lease = _lease(ids, "l-beating", now + timedelta(seconds=30))
    provider = AWSProvider(ec2=ec2, sandbox=False)
    beat = Heartbeat(lease, 30, publish=deadline_publisher(provider, lease))
    # The beat's SSH half stands in as confirmed (no sshd here): each machine now holds now + TTL.
    beat._extend = lambda machine, ttl: beat._alive_until.__setitem__(machine.id, elapsed() + ttl)
    calls = Calls(ec2)
    for _ in range(2):
        beat.beat(ttl_s=30)
    assert calls.counts["CreateTags"] == 2                       # one per beat, not one per instance
    tags = {_tag(ec2, iid, TAG_DEADLINE) for iid in ids}
    assert len(tags) == 1
    published = datetime.fromisoformat(tags.pop().replace("Z", "+00:00"))
    assert now + timedelta(seconds=25) <= published <= datetime.now(timezone.utc) + timedelta(seconds=31)


def test_a_dead_controllers_instances_end_at_deadline_plus_grace_not_at_expiry(ec2):
    now = datetime.now(timezone.utc)
    dead = launch(ec2, "l-dead", now + timedelta(hours=4), count=2)    # expiry far away
    alive = launch(ec2, "l-alive", now + timedelta(hours=4))
    provider = AWSProvider(ec2=ec2, sandbox=False)
    deadline = now + timedelta(seconds=60)
    provider.publish_deadline(_lease(dead, "l-dead", deadline), deadline)       # its last beat
    provider.publish_deadline(_lease(alive, "l-alive", now + timedelta(hours=1)), now + timedelta(hours=1))
    live = {"l-dead", "l-alive"}          # fleet's state still says both leases are active
    assert reap(ec2, live, now=deadline + DEADLINE_GRACE - timedelta(seconds=1), owner="tester") == []
    done = reap(ec2, live, now=deadline + DEADLINE_GRACE, owner="tester")
    assert sorted(a["instance_id"] for a in done) == sorted(dead)
    assert all("heartbeat deadline" in a["reason"] for a in done)
    assert set(states(ec2, dead).values()) <= {"shutting-down", "terminated"}
    assert set(states(ec2, alive).values()) == {"running"}


def test_the_lambda_reads_the_deadline_tag_too(ec2):
    now = datetime.now(timezone.utc)
    dead = launch(ec2, "l-dead-lambda", now + timedelta(hours=4))
    past = now - DEADLINE_GRACE - timedelta(seconds=5)
    ec2.create_tags(Resources=dead, Tags=[{"Key": TAG_DEADLINE, "Value": iso_tag(past)}])
    result = lambda_handler({}, None)
    assert [a["instance_id"] for a in result["actions"]] == dead


@pytest.mark.parametrize("leases", [2, 12])
def test_one_reaper_pass_costs_the_same_calls_however_many_leases(ec2, leases):
    now = datetime.now(timezone.utc)
    past = iso_tag(now - timedelta(minutes=10))
    doomed = []
    for n in range(leases):
        ids = launch(ec2, f"l-{n}", now + timedelta(hours=4), count=2)
        if n % 2 == 0:
            ec2.create_tags(Resources=ids, Tags=[{"Key": TAG_DEADLINE, "Value": past}])
            doomed += ids
    calls = Calls(ec2)
    done = reap(ec2, {f"l-{n}" for n in range(leases)}, now=now)
    assert sorted(a["instance_id"] for a in done) == sorted(doomed)
    assert dict(calls.counts) == {"DescribeInstances": 1, "TerminateInstances": 1}


def test_status_says_orphaned_once_the_deadline_passed_with_machines_still_up():
    now = datetime.now(timezone.utc)
    lease = _lease(["i-1", "i-2"], "l-x", now - timedelta(seconds=5))
    running = [MachineState(m.id, "running") for m in lease.machines]
    assert lease_view(lease, running)["health"] == "orphaned"
    lease.deadline = now + timedelta(minutes=5)
    assert lease_view(lease, running)["health"] == "up"
    lease.deadline = now - timedelta(seconds=5)
    assert lease_view(lease, [MachineState(m.id, "gone") for m in lease.machines])["health"] == "gone"


def test_extend_is_capped_by_the_reapers_expiry_which_it_cannot_move(ec2):
    """`fleet:expires-at` is fixed at launch (the first run's budget could pay until then) and the
    scheduled reaper ends the instances there: `fleet extend` reported a lease kept to a later
    deadline that the reaper then cut. The expiry is now the lease's hard end (HasHardLimit)."""
    from fleet.providers.aws.expiry import ReaperExpiry
    from fleet.providers.base import HasHardLimit
    from fleet.run.keep import extend_lease

    class Provider(ReaperExpiry):
        def _ec2_for(self, lease):
            return ec2
    now = datetime.now(timezone.utc).replace(microsecond=0)
    ids = launch(ec2, "l-exp00001", now + timedelta(minutes=40)) + launch(ec2, "l-exp00001", now + timedelta(minutes=30))
    lease = _lease(ids, "l-exp00001", now + timedelta(minutes=5))
    assert Provider().extend_limit(lease, now + timedelta(hours=2)) == now + timedelta(minutes=30)
    assert issubclass(AWSProvider, HasHardLimit)

    class Throttled(ReaperExpiry):      # EC2 not answering: never a reason to release a kept lease
        def _ec2_for(self, lease):
            raise RuntimeError("Throttling: Rate exceeded")
    assert Throttled().extend_limit(lease, now + timedelta(hours=2)) == lease.max_deadline

    told = []

    class Told(Exception):
        pass

    class Session:                    # what the machines would be told, then stop there
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def run(self, argv):
            told.append(float(argv[argv.index("--ttl") + 1]))
            raise Told()
    import fleet.remote.ssh as ssh
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ssh, "connect", lambda machine, timeout: Session())
        with pytest.raises(Told):
            extend_lease(None, lease, 7200, provider=Provider())
    assert told and all(1700 < t <= 1800 for t in told), told      # 30 min, not the 2 h asked
