"""Templates component under Pulumi mocks: baked image by recipe hash, hardened launch templates."""
from __future__ import annotations

import base64
import subprocess

import pulumi
import pytest
from fleet_stack_mocks import TAGS, run_component

from stacks.components.templates import TemplateSpec, Templates, TemplatesArgs, boot_user_data

HASH_A = "a" * 64
HASH_B = "b" * 64
SPECS = (
    TemplateSpec(name="big", instance_types=("p4d.24xlarge",), gpus_per_machine=8, spot=False,
                 disk_gb=500, recipe="pytorch-cuda", recipe_hash=HASH_A, gpu_model="A100"),
    TemplateSpec(name="small", instance_types=("g5.xlarge", "g6.xlarge"), gpus_per_machine=1,
                 spot=True, disk_gb=100, recipe="pytorch-cuda", recipe_hash=HASH_A),
    TemplateSpec(name="cpu", instance_types=("m6i.large",), gpus_per_machine=1, spot=False,
                 disk_gb=30, recipe="base-cpu", recipe_hash=HASH_B),
)


def _declare(images=None):
    def build():
        t = Templates("t", TemplatesArgs(stack="test", templates=SPECS, security_group_id="sg-1",
                                         instance_profile_arn="arn:aws:iam::1:instance-profile/p",
                                         boot_deadline_s=7200, heartbeat_ttl_s=600, tags=TAGS))
        return t, {n: lt.id for n, lt in t.launch_templates.items()}
    return run_component(build, images=images)


def test_each_template_launches_its_recipes_baked_image():
    run, ids = _declare(images={HASH_A: "ami-aaa", HASH_B: "ami-bbb"})
    lts = {r.name: r.inputs for r in run.of_type("aws:ec2/launchTemplate:LaunchTemplate")}
    assert {n: lt["imageId"] for n, lt in lts.items()} == {
        "t-big": "ami-aaa", "t-small": "ami-aaa", "t-cpu": "ami-bbb"}
    lookups = [a for tok, a in run.invokes if tok == "aws:ec2/getAmi:getAmi"]
    assert len(lookups) == 2, "one image lookup per recipe, not per template"
    assert all(a["owners"] == ["self"] and a["mostRecent"] for a in lookups)
    assert set(ids) == {"big", "small", "cpu"}


def test_hardened_launch_template():
    run, _ = _declare()
    for lt in (r.inputs for r in run.of_type("aws:ec2/launchTemplate:LaunchTemplate")):
        assert lt["metadataOptions"]["httpTokens"] == "required"
        assert lt["instanceInitiatedShutdownBehavior"] == "terminate"
        (bdm,) = lt["blockDeviceMappings"]
        assert bdm["deviceName"] == "/dev/sda1"
        assert bdm["ebs"]["encrypted"] == "true" and bdm["ebs"]["volumeType"] == "gp3"
        assert lt["iamInstanceProfile"] == {"arn": "arn:aws:iam::1:instance-profile/p"}
        assert lt["vpcSecurityGroupIds"] == ["sg-1"]
        assert "instanceMarketOptions" not in lt, "spot is chosen per launch so on-demand can follow"
        kinds = {s["resourceType"]: s["tags"] for s in lt["tagSpecifications"]}
        assert set(kinds) == {"instance", "volume", "network-interface"}
        assert all(t["fleet:project"] == "fleet" and "fleet:recipe-hash" in t for t in kinds.values())
    sizes = {r.name: r.inputs["blockDeviceMappings"][0]["ebs"]["volumeSize"]
             for r in run.of_type("aws:ec2/launchTemplate:LaunchTemplate")}
    assert sizes == {"t-big": 500, "t-small": 100, "t-cpu": 30}


def test_user_data_starts_the_watchdog_with_the_boot_deadline():
    run, _ = _declare()
    lt = run.of_type("aws:ec2/launchTemplate:LaunchTemplate")[0].inputs
    script = base64.b64decode(lt["userData"]).decode()
    assert script == boot_user_data(7200, 600)
    assert "/opt/fleet/agent.py watchdog" in script and "--max 7200" in script
    assert "--ttl 600" in script and "--poweroff" in script
    assert "X-aws-ec2-metadata-token" in script          # IMDSv2 works with http_tokens=required
    assert subprocess.run(["bash", "-n"], input=script.encode()).returncode == 0


def test_missing_baked_image_is_one_line_naming_the_bake_command():
    with pytest.raises(pulumi.RunError) as err:
        _declare(images={HASH_B: "ami-bbb"})
    msg = str(err.value)
    assert "\n" not in msg
    assert "fleet image bake pytorch-cuda" in msg
