"""Controller: the managed policy for whoever runs fleet against this stack (a person or a CI role).

Attach `controller_policy_arn` (a stack output) to the team's users or the CI job's role. It allows
exactly what fleet's controller calls (fleet/providers/aws/permissions.py, checked against the code
by a test), scoped to this stack where AWS allows it:
- launch only instances tagged `fleet:lease` and this stack's `fleet:stack`, through one of this
  stack's launch templates (`ec2:LaunchTemplate` on every RunInstances statement: a request naming no
  template, or another, matches none), with IMDSv2 required and no volume marked unencrypted, from
  this stack's subnets and security group and baked images (`fleet:recipe-hash`), tagging them only
  at launch, passing only this stack's machine role;
- afterwards change no tag but `fleet:deadline`, and only on this stack's fleet instances;
- terminate only this stack's fleet instances (another stack's or anything untagged is out of reach);
- read and write the snapshot bucket, nothing else in S3.
EC2 Describe* calls have no resource-level scoping and are allowed on "*".
"""
from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from fleet.providers.aws.permissions import (DEADLINE_TAG, DESCRIBE_ACTIONS, LEASE_TAG, RECIPE_HASH_TAG, STACK_TAG,
                                             bucket_actions)

from .common import TYPE_PREFIX, child, policy_output


@dataclass(frozen=True)
class ControllerArgs:
    stack: str
    region: str
    bucket_arn: pulumi.Input[str]
    machine_role_arn: pulumi.Input[str]
    launch_template_ids: pulumi.Input[list[str]]     # this stack's templates: the only way to launch
    tags: dict[str, str]


class Controller(pulumi.ComponentResource):
    policy: aws.iam.Policy

    def __init__(self, name: str, args: ControllerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TYPE_PREFIX}:Controller", name, None, opts)
        ec2 = f"arn:aws:ec2:{args.region}:*"
        tagged_at_launch = [f"{ec2}:instance/*", f"{ec2}:volume/*"]
        bucket = pulumi.Output.from_input(args.bucket_arn)
        on_bucket, on_objects = bucket_actions()
        of_stack = {f"aws:ResourceTag/{STACK_TAG}": args.stack}
        # The key is set on every resource of a RunInstances request that uses a launch template, and
        # absent otherwise: so no statement below allows a launch outside this stack's templates.
        via_templates = {"ArnLike": {"ec2:LaunchTemplate": pulumi.Output.from_input(args.launch_template_ids).apply(
            lambda ids: [f"{ec2}:launch-template/{i}" for i in sorted(ids)])}}
        request_tags = {"Null": {f"aws:RequestTag/{LEASE_TAG}": "false"}}
        statements = [
            {"Sid": "Discover", "Effect": "Allow", "Action": list(DESCRIBE_ACTIONS), "Resource": "*"},
            {"Sid": "LaunchFleetTaggedInstances", "Effect": "Allow", "Action": "ec2:RunInstances",
             "Resource": f"{ec2}:instance/*",
             "Condition": {**request_tags, **via_templates,
                           "StringEquals": {f"aws:RequestTag/{STACK_TAG}": args.stack,
                                            "ec2:MetadataHttpTokens": "required"}}},
            {"Sid": "LaunchFleetTaggedVolumes", "Effect": "Allow", "Action": "ec2:RunInstances",
             "Resource": f"{ec2}:volume/*",
             "Condition": {**request_tags, **via_templates,
                           "StringEquals": {f"aws:RequestTag/{STACK_TAG}": args.stack}}},
            # A Deny on the explicit value only: the templates encrypt, and a request overriding
            # their block devices must not launch unencrypted volumes.
            {"Sid": "DenyUnencryptedVolumes", "Effect": "Deny", "Action": "ec2:RunInstances",
             "Resource": f"{ec2}:volume/*", "Condition": {"Bool": {"ec2:Encrypted": "false"}}},
            {"Sid": "LaunchFromThisStacksParts", "Effect": "Allow", "Action": "ec2:RunInstances",
             "Resource": [f"{ec2}:launch-template/*", f"{ec2}:subnet/*", f"{ec2}:security-group/*"],
             "Condition": {"StringEquals": of_stack, **via_templates}},
            {"Sid": "LaunchFromBakedImages", "Effect": "Allow", "Action": "ec2:RunInstances",
             "Resource": f"arn:aws:ec2:{args.region}::image/*",
             "Condition": {"Null": {f"aws:ResourceTag/{RECIPE_HASH_TAG}": "false"}, **via_templates}},
            {"Sid": "LaunchWithNetworkInterfaces", "Effect": "Allow", "Action": "ec2:RunInstances",
             "Resource": f"{ec2}:network-interface/*", "Condition": via_templates},
            {"Sid": "TagOnlyAtLaunch", "Effect": "Allow", "Action": "ec2:CreateTags",
             "Resource": tagged_at_launch, "Condition": {"StringEquals": {"ec2:CreateAction": "RunInstances"}}},
            {"Sid": "MoveDeadlineTagOfThisStacksInstances", "Effect": "Allow", "Action": "ec2:CreateTags",
             "Resource": f"{ec2}:instance/*",
             "Condition": {"Null": {f"aws:ResourceTag/{LEASE_TAG}": "false"}, "StringEquals": of_stack,
                           "ForAllValues:StringEquals": {"aws:TagKeys": [DEADLINE_TAG]}}},
            {"Sid": "TerminateThisStacksInstances", "Effect": "Allow", "Action": "ec2:TerminateInstances",
             "Resource": f"{ec2}:instance/*",
             "Condition": {"Null": {f"aws:ResourceTag/{LEASE_TAG}": "false"}, "StringEquals": of_stack}},
            {"Sid": "PassMachineRole", "Effect": "Allow", "Action": "iam:PassRole",
             "Resource": args.machine_role_arn,
             "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}},
            {"Sid": "SnapshotBucket", "Effect": "Allow", "Action": list(on_bucket), "Resource": bucket},
            {"Sid": "SnapshotObjects", "Effect": "Allow", "Action": list(on_objects),
             "Resource": bucket.apply(lambda a: f"{a}/*")},
        ]
        self.policy = aws.iam.Policy(
            f"{name}-controller", name=f"fleet-{args.stack}-controller",
            description="Attach to the users or CI role that run fleet against this stack",
            policy=policy_output(*statements), tags=args.tags, opts=child(self))
        self.register_outputs({"policy_arn": self.policy.arn})
