"""The whole program under mocks, its `fleet` output parsed by the AWS provider's reader."""
from __future__ import annotations

import json

from fleet_stack_mocks import run_program

from fleet.images.recipe import load_recipe
from fleet.providers.aws.outputs import OUTPUTS_VERSION, parse_outputs


def test_outputs_parse_with_the_cli_reader(default_stack):
    # As `pulumi stack output --json` would print it.
    document = json.loads(json.dumps({"fleet": default_stack.outputs}))
    out = parse_outputs(document, source="mock stack")
    assert out.version == OUTPUTS_VERSION
    assert out.region == "us-east-1" and out.stack == "test" and out.project == "fleet"
    assert list(out.subnets) == ["us-east-1a", "us-east-1b", "us-east-1c"]
    assert out.security_group_id == "sg-fleet-test-machines"
    assert out.instance_profile.name == "fleet-test-machine"
    assert out.snapshot_bucket.startswith("fleet-test-snapshots-")
    assert set(out.templates) == {"aws-8gpu", "aws-4gpu", "aws-1gpu"}
    big = out.template("aws-8gpu")
    assert big.launch_template_id == "lt-fleet-test-aws-8gpu"
    assert big.instance_types == ("p4d.24xlarge", "p5.48xlarge") and big.gpus_per_machine == 8
    assert big.spot is False and out.template("aws-4gpu").spot is True
    assert big.recipe == "pytorch-cuda" and big.disk_gb == 500 and big.gpu_model == "A100"
    # the image is the one tagged with the recipe's current content hash
    assert big.image_id == "ami-" + load_recipe("pytorch-cuda").content_hash[:8]
    assert out.reaper.function_name == "fleet-test-reaper"
    assert out.reaper.schedule == "rate(10 minutes)" and out.reaper.max_lease_hours == 168
    assert parse_outputs(out.to_dict()) == parse_outputs(default_stack.outputs)


def test_explicit_zones_and_another_stack_name():
    run = run_program({"fleet:availabilityZones": ["us-east-1d", "us-east-1b"]}, stack="prod")
    out = parse_outputs(run.outputs)
    assert list(out.subnets) == ["us-east-1d", "us-east-1b"]       # the user's order is kept
    assert out.stack == "prod" and out.reaper.function_name == "fleet-prod-reaper"
    assert not [tok for tok, _ in run.invokes if "getAvailabilityZones" in tok]


def test_discovered_zones_are_capped_by_az_count():
    run = run_program({"fleet:azCount": 2})
    assert list(parse_outputs(run.outputs).subnets) == ["us-east-1a", "us-east-1b"]
