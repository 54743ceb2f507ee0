"""What the person or CI job running fleet needs from AWS, as data.

`CONTROLLER_ACTIONS` maps every boto3 operation the controller calls (`fleet up`, `down`, `status`,
`offers`, `reap`, snapshots and outputs in S3, the record anchor) to the IAM action that authorises
it. The stack's Controller component (stacks/components/controller.py) turns these into a managed
policy scoped to the stack's resources and tags; a test scans fleet's code for boto3 operations and
fails on one missing here, so the shipped policy cannot fall behind the code.

Image baking (`fleet image bake`, fleet/images/) is an administrator's job with wider rights and is
not part of this policy; neither is the moto sandbox (fleet/providers/aws/sandbox.py).
"""
from __future__ import annotations

# boto3 operation (snake_case, as called on a client, a paginator or a waiter) → IAM action.
CONTROLLER_ACTIONS: dict[tuple[str, str], str] = {
    ("ec2", "describe_instances"): "ec2:DescribeInstances",
    ("ec2", "describe_images"): "ec2:DescribeImages",
    ("ec2", "describe_availability_zones"): "ec2:DescribeAvailabilityZones",
    ("ec2", "describe_instance_types"): "ec2:DescribeInstanceTypes",
    ("ec2", "describe_spot_price_history"): "ec2:DescribeSpotPriceHistory",
    ("ec2", "describe_launch_templates"): "ec2:DescribeLaunchTemplates",
    ("ec2", "describe_launch_template_versions"): "ec2:DescribeLaunchTemplateVersions",
    ("ec2", "run_instances"): "ec2:RunInstances",
    ("ec2", "create_tags"): "ec2:CreateTags",
    ("ec2", "terminate_instances"): "ec2:TerminateInstances",
    ("pricing", "get_products"): "pricing:GetProducts",      # on-demand prices (pricing.py)
    ("s3", "head_bucket"): "s3:ListBucket",
    ("s3", "list_objects_v2"): "s3:ListBucket",
    ("s3", "list_object_versions"): "s3:ListBucketVersions",
    ("s3", "get_object_lock_configuration"): "s3:GetBucketObjectLockConfiguration",
    ("s3", "get_object"): "s3:GetObject",
    ("s3", "head_object"): "s3:GetObject",
    ("s3", "download_fileobj"): "s3:GetObject",
    ("s3", "put_object"): "s3:PutObject",
    ("s3", "upload_fileobj"): "s3:PutObject",
    ("s3", "delete_object"): "s3:DeleteObject",
}
# Reading an object by version (the anchor's history) needs this one besides s3:GetObject.
EXTRA_ACTIONS = ("s3:GetObjectVersion", "s3:AbortMultipartUpload", "s3:GetBucketLocation")

# EC2 Describe* calls and the Price List API take no resource-level scoping; everything else in the
# policy is scoped.
DESCRIBE_ACTIONS = tuple(sorted({a for a in CONTROLLER_ACTIONS.values()
                                 if a.startswith(("ec2:Describe", "pricing:"))}))

LEASE_TAG = "fleet:lease"
DEADLINE_TAG = "fleet:deadline"
STACK_TAG = "fleet:stack"             # on every resource the stack makes and every instance fleet launches
RECIPE_HASH_TAG = "fleet:recipe-hash"   # on every image `fleet image bake` makes


def bucket_actions() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(actions on the bucket itself, actions on its objects)."""
    s3 = {a for a in CONTROLLER_ACTIONS.values() if a.startswith("s3:")} | set(EXTRA_ACTIONS)
    on_bucket = {"s3:ListBucket", "s3:ListBucketVersions", "s3:GetBucketObjectLockConfiguration",
                 "s3:GetBucketLocation"}
    return tuple(sorted(s3 & on_bucket)), tuple(sorted(s3 - on_bucket))
