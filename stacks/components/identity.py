"""Identity: the machines' instance role and profile, with no permissions at all.

The launch templates name an instance profile, so the stack makes one; its role is granted nothing.
Machines need no AWS rights: snapshot chunks reach them through presigned GETs the controller makes
per chunk (fleet/snapshots/sync.py `_presign`, remote_helper's fetch), node 0 of a detached run gets
the caller's credentials in its supervisor's memory, and a machine ends itself by powering off
(shutdown behaviour terminate). Any bucket right would let one machine read every user's store,
and any EC2 terminate right (its conditions can only look at the target) every teammate's machine.
"""
from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from .common import TYPE_PREFIX, assume_role_policy, child

LEASE_TAG = "fleet:lease"       # every instance the AWS provider launches carries it


@dataclass(frozen=True)
class IdentityArgs:
    region: str
    tags: dict[str, str]


class Identity(pulumi.ComponentResource):
    role: aws.iam.Role
    instance_profile: aws.iam.InstanceProfile

    def __init__(self, name: str, args: IdentityArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TYPE_PREFIX}:Identity", name, None, opts)
        self.role = aws.iam.Role(f"{name}-machine", assume_role_policy=assume_role_policy(
            "ec2.amazonaws.com"), description="fleet machines: no AWS permissions",
            tags=args.tags, opts=child(self))
        self.instance_profile = aws.iam.InstanceProfile(f"{name}-machine", role=self.role.name,
                                                        tags=args.tags, opts=child(self))
        self.register_outputs({"role_arn": self.role.arn,
                               "instance_profile_arn": self.instance_profile.arn,
                               "instance_profile_name": self.instance_profile.name})
