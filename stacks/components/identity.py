"""Identity: the machines' instance role and profile, least privilege.

A machine may
- read the snapshot bucket (code and data snapshots are staged from it);
- write under `run-outputs/<aws:userid>/` only — for an instance role, aws:userid is
  `<role id>:<instance id>`, so each machine writes under its own prefix and can overwrite nobody
  else's outputs (`aws sts get-caller-identity` prints the UserId on the machine).
Nothing else: no EC2 rights at all (a machine ends itself by powering off, shutdown behaviour
terminate; any terminate right would reach every teammate's machine of the stack, since its
conditions can only look at the target), no tag-writing rights, no wildcard actions.
"""
from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from .common import TYPE_PREFIX, assume_role_policy, child, policy_output

RUN_OUTPUTS_PREFIX = "run-outputs/"
LEASE_TAG = "fleet:lease"       # every instance the AWS provider launches carries it


@dataclass(frozen=True)
class IdentityArgs:
    bucket_arn: pulumi.Input[str]
    region: str
    tags: dict[str, str]


class Identity(pulumi.ComponentResource):
    role: aws.iam.Role
    instance_profile: aws.iam.InstanceProfile

    def __init__(self, name: str, args: IdentityArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TYPE_PREFIX}:Identity", name, None, opts)
        self.role = aws.iam.Role(f"{name}-machine", assume_role_policy=assume_role_policy(
            "ec2.amazonaws.com"), description="fleet machines: read snapshots, write own run outputs",
            tags=args.tags, opts=child(self))
        self.instance_profile = aws.iam.InstanceProfile(f"{name}-machine", role=self.role.name,
                                                        tags=args.tags, opts=child(self))
        bucket = pulumi.Output.from_input(args.bucket_arn)
        self.policy = aws.iam.RolePolicy(
            f"{name}-machine", role=self.role.id,
            policy=policy_output(
                {"Sid": "ReadSnapshotBucket", "Effect": "Allow",
                 "Action": ["s3:GetObject", "s3:GetObjectVersion"],
                 "Resource": bucket.apply(lambda a: f"{a}/*")},
                {"Sid": "ListSnapshotBucket", "Effect": "Allow",
                 "Action": ["s3:ListBucket", "s3:GetBucketLocation"], "Resource": bucket},
                {"Sid": "WriteOwnRunOutputs", "Effect": "Allow",
                 "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
                 # ${aws:userid} is an IAM policy variable, resolved per request, not a Python format.
                 "Resource": bucket.apply(lambda a: f"{a}/{RUN_OUTPUTS_PREFIX}" + "${aws:userid}/*")},
            ),
            opts=child(self))
        self.register_outputs({"role_arn": self.role.arn,
                               "instance_profile_arn": self.instance_profile.arn,
                               "instance_profile_name": self.instance_profile.name})
