"""Controller policy: what the users or CI role running fleet may do, scoped to the stack's tags and
resources, and complete: every boto3 operation fleet's controller code calls is authorised by it."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import botocore.session
from botocore import xform_name
from fleet_stack_mocks import TAGS, run_component

from fleet.providers.aws.outputs import parse_outputs
from fleet.providers.aws.permissions import CONTROLLER_ACTIONS
from stacks.components.controller import Controller, ControllerArgs

REPO = Path(__file__).resolve().parents[3]
BUCKET = "arn:aws:s3:::snap-bucket"
ROLE = "arn:aws:iam::123456789012:role/fleet-machine"
VIA_TEMPLATES = {"ec2:LaunchTemplate": ["arn:aws:ec2:us-east-1:*:launch-template/lt-a",
                                        "arn:aws:ec2:us-east-1:*:launch-template/lt-b"]}
# The controller's code: everything but image baking (an administrator's job) and the moto sandbox.
CONTROLLER_CODE = [p for p in (REPO / "fleet").rglob("*.py")
                   if "images" not in p.relative_to(REPO / "fleet").parts[:1] and p.name != "sandbox.py"]


def _statements():
    def build():
        c = Controller("c", ControllerArgs(stack="test", region="us-east-1", bucket_arn=BUCKET,
                                           machine_role_arn=ROLE, launch_template_ids=["lt-a", "lt-b"],
                                           tags=TAGS))
        return c, c.policy.policy
    run, text = run_component(build)
    return run, {s["Sid"]: s for s in json.loads(text)["Statement"]}


def _actions(statement) -> set[str]:
    a = statement["Action"]
    return {a} if isinstance(a, str) else set(a)


def _operations() -> dict[str, set[str]]:
    """snake_case operation names of the services fleet calls, from botocore's own models."""
    session = botocore.session.get_session()
    return {svc: {xform_name(op) for op in session.get_service_model(svc).operation_names}
            for svc in ("ec2", "s3", "pricing")} | {"s3": {xform_name(op) for op in session.get_service_model("s3")
                                               .operation_names} | {"upload_fileobj", "download_fileobj"}}


def _called(ops: dict[str, set[str]]) -> set[tuple[str, str, str]]:
    """(file, service, operation) for each boto3 operation called as a method, paginator or waiter."""
    found = set()
    for path in CONTROLLER_CODE:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            name = node.func.attr
            if name in ("get_paginator", "get_waiter") and node.args and isinstance(node.args[0], ast.Constant):
                name = node.args[0].value
                if node.func.attr == "get_waiter":
                    name = "describe_instances" if name.startswith("instance_") else name
            for svc, names in ops.items():
                if name in names and name not in ("get_paginator", "get_waiter", "close"):
                    found.add((path.name, svc, name))
    return found


def test_every_operation_the_controller_calls_is_in_the_policy():
    _, st = _statements()
    allowed = set().union(*(_actions(s) for s in st.values()))
    called = _called(_operations())
    # the scan does see fleet's calls (a scan that finds nothing proves nothing)
    assert {("ec2", "run_instances"), ("ec2", "create_tags"), ("s3", "put_object"),
            ("pricing", "get_products"), ("ec2", "describe_spot_price_history")} <= {(s, o) for _, s, o in called}
    missing = sorted(f"{f}: {s}.{o}" for f, s, o in called
                     if (s, o) in CONTROLLER_ACTIONS and CONTROLLER_ACTIONS[(s, o)] not in allowed)
    unknown = sorted(f"{f}: {s}.{o}" for f, s, o in called
                     if (s, o) not in CONTROLLER_ACTIONS and not any((t, o) in CONTROLLER_ACTIONS for t in ("ec2", "s3")))
    assert not missing, f"called but not allowed: {missing}"
    assert not unknown, f"add these to fleet/providers/aws/permissions.py: {unknown}"


def test_launch_tagging_and_termination_are_scoped_to_this_stack():
    _, st = _statements()
    of_stack = {"aws:ResourceTag/fleet:stack": "test"}
    assert st["LaunchFleetTaggedInstances"]["Condition"] == {
        "Null": {"aws:RequestTag/fleet:lease": "false"}, "ArnLike": VIA_TEMPLATES,
        "StringEquals": {"aws:RequestTag/fleet:stack": "test", "ec2:MetadataHttpTokens": "required"}}
    assert st["LaunchFleetTaggedVolumes"]["Condition"] == {
        "Null": {"aws:RequestTag/fleet:lease": "false"}, "ArnLike": VIA_TEMPLATES,
        "StringEquals": {"aws:RequestTag/fleet:stack": "test"}}
    assert st["LaunchFromThisStacksParts"]["Condition"] == {"StringEquals": of_stack, "ArnLike": VIA_TEMPLATES}
    assert st["LaunchFromBakedImages"]["Condition"] == {"Null": {"aws:ResourceTag/fleet:recipe-hash": "false"},
                                                        "ArnLike": VIA_TEMPLATES}
    assert st["TagOnlyAtLaunch"]["Condition"] == {"StringEquals": {"ec2:CreateAction": "RunInstances"}}
    later = st["MoveDeadlineTagOfThisStacksInstances"]["Condition"]
    assert later["ForAllValues:StringEquals"] == {"aws:TagKeys": ["fleet:deadline"]}
    assert later["Null"] == {"aws:ResourceTag/fleet:lease": "false"} and later["StringEquals"] == of_stack
    assert st["TerminateThisStacksInstances"]["Condition"] == {
        "Null": {"aws:ResourceTag/fleet:lease": "false"}, "StringEquals": of_stack}
    # every RunInstances resource is conditioned, and only through this stack's launch templates
    launch = [s for s in st.values() if "ec2:RunInstances" in _actions(s) and s["Effect"] == "Allow"]
    assert len(launch) == 5 and all(s["Condition"]["ArnLike"] == VIA_TEMPLATES for s in launch)
    tagging = [s for s in st.values() if "ec2:CreateTags" in _actions(s) or "ec2:DeleteTags" in _actions(s)]
    assert all("Condition" in s for s in tagging) and not any("ec2:DeleteTags" in _actions(s) for s in tagging)


def test_launches_outside_the_templates_promises_match_no_statement():
    """The templates require IMDSv2 and encrypt their volumes; a RunInstances naming no template (or
    overriding those) must not be allowed by the policy the templates stand for."""
    _, st = _statements()
    instance = [s for s in st.values() if s["Effect"] == "Allow" and "ec2:RunInstances" in _actions(s)
                and "instance/*" in str(s["Resource"])]
    assert [s["Sid"] for s in instance] == ["LaunchFleetTaggedInstances"]
    assert instance[0]["Condition"]["StringEquals"]["ec2:MetadataHttpTokens"] == "required"
    assert st["DenyUnencryptedVolumes"] == {
        "Sid": "DenyUnencryptedVolumes", "Effect": "Deny", "Action": "ec2:RunInstances",
        "Resource": "arn:aws:ec2:us-east-1:*:volume/*", "Condition": {"Bool": {"ec2:Encrypted": "false"}}}


def test_the_stack_policy_names_its_own_launch_templates(default_stack):
    policy = json.loads(default_stack.one("aws:iam/policy:Policy").inputs["policy"])
    launch = [s for s in policy["Statement"] if s["Action"] == "ec2:RunInstances" and s["Effect"] == "Allow"]
    ids = sorted(f"lt-{r.name}" for r in default_stack.of_type("aws:ec2/launchTemplate:LaunchTemplate"))
    assert len(ids) == 3
    for s in launch:
        assert s["Condition"]["ArnLike"]["ec2:LaunchTemplate"] == [
            f"arn:aws:ec2:us-east-1:*:launch-template/{i}" for i in ids], s["Sid"]


def test_passes_only_the_machine_role_and_touches_only_the_snapshot_bucket():
    _, st = _statements()
    assert st["PassMachineRole"]["Resource"] == ROLE
    assert st["PassMachineRole"]["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}
    s3 = [s for s in st.values() if any(a.startswith("s3:") for a in _actions(s))]
    assert {s["Resource"] for s in s3} == {BUCKET, f"{BUCKET}/*"}
    assert [s for s in st.values() if s["Resource"] == "*"] == [st["Discover"]]
    # unscoped: read-only discovery, and the public price list (on-demand prices, fleet/providers/aws/pricing.py)
    assert all(a.startswith("ec2:Describe") or a == "pricing:GetProducts" for a in _actions(st["Discover"]))


def test_the_stack_exports_the_policy_arn(default_stack):
    policy = default_stack.one("aws:iam/policy:Policy")
    assert policy.inputs["name"] == "fleet-test-controller"
    assert parse_outputs(default_stack.outputs).controller_policy_arn.endswith(":policy/fleet-test-controller")
