"""fleet/providers/aws/moto_tags.py: the sandbox's and the tests' moto servers look a resource's tags up
directly instead of scanning every tag; what they answer must be what moto's own scan answers."""
from __future__ import annotations

import pytest

pytest.importorskip("moto")


def test_each_resources_tags_are_what_motos_scan_gives_and_tag_filters_still_select(monkeypatch):
    import boto3
    from moto import mock_aws
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ec2.models import ec2_backends

    from fleet.providers.aws import moto_tags
    for key in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    moto_tags.install()
    moto_tags.install()      # twice: still one wrapper around moto's own
    with mock_aws():
        ec2 = boto3.client("ec2", region_name="us-east-1")
        image = ec2.describe_images()["Images"][0]["ImageId"]
        ids = []
        for lease in ("l-a", "l-b", "l-a"):
            tags = [{"Key": "fleet:lease", "Value": lease}, {"Key": "Name", "Value": f"m-{lease}"}]
            ids += [i["InstanceId"] for i in ec2.run_instances(
                ImageId=image, MinCount=1, MaxCount=1,
                TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])["Instances"]]
        group = ec2.create_security_group(GroupName="g", Description="d")["GroupId"]
        ec2.create_tags(Resources=[group], Tags=[{"Key": "fleet:stack", "Value": "s"}])
        backend = ec2_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]
        resources = [*backend.all_instances(), backend.get_security_group_from_id(group)]
        assert resources
        for resource in resources:
            assert resource.get_tags() == backend.describe_tags(filters={"resource-id": [resource.id]})
        found = ec2.describe_instances(Filters=[{"Name": "tag:fleet:lease", "Values": ["l-a"]}])
        assert sorted(i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]) == \
            sorted([ids[0], ids[2]])
        shown = {t["Key"]: t["Value"] for r in ec2.describe_instances(InstanceIds=[ids[1]])["Reservations"]
                 for i in r["Instances"] for t in i["Tags"]}
        assert shown == {"fleet:lease": "l-b", "Name": "m-l-b"}
