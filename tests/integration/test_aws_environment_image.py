"""A rerun on AWS boots the AMI its run recorded (RunInstances' ImageId over the launch template's),
and the lease records that AMI with the recipe and hash from its own tags; a deregistered AMI is
seen as gone (moto server)."""
from __future__ import annotations

from fleet.environment.model import ImageRef
from fleet.providers.aws.launch import find_instances
from tests.integration.test_aws_provider import plan_for, project, provider, stack  # noqa: F401 — fixtures


def test_a_recorded_ami_is_booted_and_recorded(provider, project):  # noqa: F811
    ec2 = provider.ec2
    ami = ec2.describe_images(Owners=["amazon"], MaxResults=5)["Images"][-1]["ImageId"]
    ec2.create_tags(Resources=[ami], Tags=[{"Key": "fleet:recipe", "Value": "pytorch-cuda"},
                                          {"Key": "fleet:recipe-hash", "Value": "7" * 64}])
    assert provider.image_exists(ImageRef("ami", ami))
    assert not provider.image_exists(ImageRef("ami", "ami-0123456789abcdef0"))
    provider.use_image(ImageRef("ami", ami))
    lease = provider.lease(plan_for(provider, "aws-4gpu", 4, project), "l-image", 120)
    try:
        (inst,) = find_instances(ec2, {"fleet:lease": "l-image"})
        assert inst["ImageId"] == ami
        assert lease.meta["image"] == {"kind": "ami", "id": ami, "recipe": "pytorch-cuda", "recipe_hash": "7" * 64}
    finally:
        provider.release(lease)
