"""The reaper against moto: orphans and expired instances go, live leases stay, dry-run touches nothing."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from fleet.providers.aws import reap as reap_mod
from fleet.providers.aws.reap import lambda_handler, reap
from tests.fixtures.aws import point_boto3_at, reset_moto

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def ec2(moto_server):
    import boto3
    with pytest.MonkeyPatch.context() as mp:
        point_boto3_at(mp, moto_server)
        client = boto3.client("ec2", region_name="us-east-1")
        yield client
        assert not reap_mod.fleet_instances(client) or _terminate_all(client)
    reset_moto(moto_server)


def _terminate_all(client) -> bool:
    ids = [i["InstanceId"] for i in reap_mod.fleet_instances(client)]
    client.terminate_instances(InstanceIds=ids)
    return False    # leftovers fail the test after cleaning up


def launch(client, lease, expires, user="tester", count=1):
    image = client.describe_images(Owners=["amazon"], MaxResults=5)["Images"][0]["ImageId"]
    tags = [{"Key": "fleet:lease", "Value": lease}, {"Key": "fleet:user", "Value": user}]
    if expires:
        tags.append({"Key": "fleet:expires-at", "Value": expires.isoformat().replace("+00:00", "Z")})
    res = client.run_instances(ImageId=image, MinCount=count, MaxCount=count, InstanceType="g5.xlarge",
                               TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
    return [i["InstanceId"] for i in res["Instances"]]


def states(client, ids):
    out = {}
    for page in client.get_paginator("describe_instances").paginate(InstanceIds=ids):
        for r in page["Reservations"]:
            out.update({i["InstanceId"]: i["State"]["Name"] for i in r["Instances"]})
    return out


def test_reaper_terminates_orphans_and_expired_spares_live(ec2):
    now = datetime.now(timezone.utc)
    later = now + timedelta(minutes=30)                 # past the young-instance grace
    live = launch(ec2, "l-live", now + timedelta(hours=2), count=2)
    orphan = launch(ec2, "l-orphan", now + timedelta(hours=2))
    expired = launch(ec2, "l-live-but-expired", now + timedelta(minutes=5))
    theirs = launch(ec2, "l-someone-else", now + timedelta(hours=2), user="alice")
    untagged = ec2.run_instances(ImageId=ec2.describe_images(Owners=["amazon"], MaxResults=5)["Images"][0]["ImageId"],
                                 MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    live_ids = {"l-live", "l-live-but-expired"}

    dry = reap(ec2, live_ids, now=later, dry_run=True, owner="tester")
    assert {a["instance_id"] for a in dry} == {*orphan, *expired}
    assert {a["action"] for a in dry} == {"would-terminate"}
    assert set(states(ec2, orphan + expired).values()) == {"running"}       # dry run changed nothing

    done = reap(ec2, live_ids, now=later, owner="tester")
    reasons = {a["instance_id"]: a["reason"] for a in done}
    assert "not live" in reasons[orphan[0]] and "expired" in reasons[expired[0]]
    after = states(ec2, live + orphan + expired + theirs + [untagged])
    assert {after[i] for i in orphan + expired} <= {"shutting-down", "terminated"}
    assert {after[i] for i in live + theirs + [untagged]} == {"running"}    # never touches non-fleet
    # Without an owner filter (team state store knows every lease) the other user's orphan goes too.
    assert [a["instance_id"] for a in reap(ec2, live_ids, now=later)] == theirs
    reap(ec2, set(), now=later)                                             # tidy up the live ones
    ec2.terminate_instances(InstanceIds=[untagged])


def test_young_orphans_are_spared_and_lambda_reaps_only_expired(ec2):
    now = datetime.now(timezone.utc)
    young = launch(ec2, "l-being-made", now + timedelta(hours=1))
    assert reap(ec2, set(), now=now) == []                                   # its lease may not be saved yet
    old = launch(ec2, "l-old", now - timedelta(minutes=1))
    result = lambda_handler({"dry_run": False}, None)
    assert [a["instance_id"] for a in result["actions"]] == old
    reap(ec2, set(), now=now + timedelta(hours=2))
    assert set(states(ec2, young + old).values()) <= {"shutting-down", "terminated"}


def test_a_far_expiry_tag_spares_an_instance_only_up_to_the_hard_maximum(ec2, monkeypatch):
    """fleet:expires-at is the launcher's word: 9999-12-31 once spared a machine forever."""
    forever = launch(ec2, "l-forever", datetime(9999, 12, 31, tzinfo=timezone.utc))
    now = datetime.now(timezone.utc)
    assert reap(ec2, None, now=now + timedelta(days=6), dry_run=True) == []
    done = reap(ec2, None, now=now + timedelta(days=8), dry_run=True)
    assert [a["instance_id"] for a in done] == forever and "hard maximum" in done[0]["reason"]
    # the stack's fleet:reaper.maxLeaseHours moves the line: the Lambda reads it from its environment
    assert reap(ec2, None, now=now + timedelta(days=8), dry_run=True, max_life=timedelta(days=30)) == []
    monkeypatch.setenv(reap_mod.MAX_LIFE_ENV, "720")
    seen = {}
    monkeypatch.setattr(reap_mod, "reap", lambda *a, **kw: seen.update(kw) or [])
    lambda_handler({}, None)
    assert seen["max_life"] == timedelta(hours=720)
    for unreadable in ("", "0", "a week"):
        monkeypatch.setenv(reap_mod.MAX_LIFE_ENV, unreadable)
        assert reap_mod.max_life_from_env() == reap_mod.DEFAULT_MAX_LIFE == timedelta(days=7)
    ec2.terminate_instances(InstanceIds=forever)


def test_reaper_paginates_over_100(ec2, monkeypatch):
    monkeypatch.setattr(reap_mod, "PAGE_SIZE", 40)
    now = datetime.now(timezone.utc)
    ids = launch(ec2, "l-big-orphan", now - timedelta(seconds=1), count=110)
    done = reap(ec2, set(), now=now)
    assert sorted(a["instance_id"] for a in done) == sorted(ids)
    assert reap_mod.fleet_instances(ec2) == []
