"""The stack-outputs reader: the contract stacks/ exports and the AWS provider reads."""
from __future__ import annotations

import copy
import json

import pytest

from fleet.errors import ConfigError, NotFound
from fleet.providers.aws.outputs import OUTPUTS_VERSION, load_outputs, parse_outputs, resolve_outputs

SAMPLE = {
    "version": OUTPUTS_VERSION, "region": "us-east-1", "project": "fleet", "stack": "dev",
    "vpc_id": "vpc-1", "subnets": {"us-east-1a": "subnet-a", "us-east-1b": "subnet-b"},
    "security_group_id": "sg-1",
    "instance_profile": {"arn": "arn:aws:iam::123456789012:instance-profile/p", "name": "p"},
    "snapshot_bucket": "bucket",
    "templates": {"aws-8gpu": {"launch_template_id": "lt-1", "instance_types": ["p4d.24xlarge"],
                               "gpus_per_machine": 8, "gpu_model": "A100", "spot": True,
                               "image_id": "ami-1", "recipe": "cuda12", "disk_gb": 200}},
    "reaper": {"function_name": "fleet-reaper", "schedule": "rate(10 minutes)"},
}


def test_pulumi_wrapped_and_bare_parse_the_same(tmp_path):
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps({"fleet": SAMPLE}))
    wrapped = load_outputs(path)
    bare = load_outputs(SAMPLE)
    assert wrapped.to_dict() == bare.to_dict()
    t = wrapped.template("aws-8gpu")
    assert (t.launch_template_id, t.instance_types, t.gpus_per_machine, t.spot) == \
        ("lt-1", ("p4d.24xlarge",), 8, True)
    assert list(wrapped.subnets) == ["us-east-1a", "us-east-1b"]
    assert wrapped.instance_profile.name == "p" and wrapped.reaper.function_name == "fleet-reaper"
    assert parse_outputs(wrapped.to_dict()).to_dict() == wrapped.to_dict()   # round trip


def test_missing_file_is_one_line_not_found(tmp_path):
    with pytest.raises(NotFound) as err:
        load_outputs(tmp_path / "nope.json")
    assert "does not exist" in str(err.value) and "\n" not in str(err.value)


def test_older_version_says_to_refresh():
    old = dict(SAMPLE, version=0)
    with pytest.raises(ConfigError, match=r"older .*fleet stack up"):
        parse_outputs(old)
    with pytest.raises(ConfigError, match="upgrade fleet"):
        parse_outputs(dict(SAMPLE, version=OUTPUTS_VERSION + 1))


@pytest.mark.parametrize("path", [("region",), ("templates", "aws-8gpu", "launch_template_id"),
                                  ("instance_profile", "arn"), ("subnets",)])
def test_missing_key_names_the_key(path):
    data = copy.deepcopy(SAMPLE)
    node = data
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    with pytest.raises(ConfigError) as err:
        parse_outputs({"fleet": data}, source="out.json")
    assert ".".join(path) in str(err.value) and "out.json" in str(err.value)


def test_wrong_types_and_not_outputs_at_all():
    bad = copy.deepcopy(SAMPLE)
    bad["templates"]["aws-8gpu"]["gpus_per_machine"] = "8"
    with pytest.raises(ConfigError, match="gpus_per_machine: expected int"):
        parse_outputs(bad)
    with pytest.raises(ConfigError, match="not fleet stack outputs"):
        parse_outputs({"something": 1})


def test_unknown_template_lists_known_ones():
    with pytest.raises(NotFound, match="aws-8gpu"):
        load_outputs(SAMPLE).template("aws-99gpu")


def test_resolve_prefers_env_then_config(tmp_path):
    path = tmp_path / "o.json"
    path.write_text(json.dumps({"fleet": SAMPLE}))
    assert resolve_outputs({}, env={"FLEET_AWS_OUTPUTS": str(path)}).vpc_id == "vpc-1"
    assert resolve_outputs({"outputs": str(path)}, env={}).vpc_id == "vpc-1"
    with pytest.raises(ConfigError, match="FLEET_AWS_OUTPUTS"):
        resolve_outputs({}, env={})
