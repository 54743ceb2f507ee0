"""Storage: the snapshot bucket. Private (public access block, ACLs disabled, TLS only), encrypted
with KMS (S3 bucket keys keep the KMS request bill small), versioned, with a lifecycle that expires
old versions; object lock (audit mode) when the stack config asks for it.

Object lock can only be switched on when the bucket is created: turning it on later means a new
bucket — the config docs say so. Its default rule (objectLockDays) is sized for chunks; the records
anchor (`<store prefix>/records/tip`, fleet/records/anchor.py) retains each tip for at least ten
years whatever the rule says, and S3 lifecycle never expires a version still under retention, so the
old-version expiry below cannot take a tip the audit relies on. (That rule cannot be scoped to chunks
instead: the store prefix is each team's choice, and lifecycle filters match prefixes only.)
"""
from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from .common import TYPE_PREFIX, child, policy_output


@dataclass(frozen=True)
class StorageArgs:
    stack: str
    object_lock: bool
    object_lock_days: int
    object_lock_mode: str
    noncurrent_days: int
    force_destroy: bool
    tags: dict[str, str]


class Storage(pulumi.ComponentResource):
    bucket: aws.s3.Bucket

    def __init__(self, name: str, args: StorageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TYPE_PREFIX}:Storage", name, None, opts)
        # A prefix, not a fixed name: bucket names are global, stacks are many.
        self.bucket = aws.s3.Bucket(
            f"{name}-snapshots", bucket_prefix=f"fleet-{args.stack.lower()[:20]}-snapshots-",
            object_lock_enabled=args.object_lock or None, force_destroy=args.force_destroy,
            tags=args.tags, opts=child(self))
        bucket_id = self.bucket.id
        self.public_access_block = aws.s3.BucketPublicAccessBlock(
            f"{name}-snapshots", bucket=bucket_id, block_public_acls=True, block_public_policy=True,
            ignore_public_acls=True, restrict_public_buckets=True, opts=child(self))
        self.ownership = aws.s3.BucketOwnershipControls(
            f"{name}-snapshots", bucket=bucket_id,
            rule={"object_ownership": "BucketOwnerEnforced"}, opts=child(self))
        self.encryption = aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-snapshots", bucket=bucket_id,
            rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "aws:kms"},
                    "bucket_key_enabled": True}],
            opts=child(self))
        self.versioning = aws.s3.BucketVersioning(
            f"{name}-snapshots", bucket=bucket_id,
            versioning_configuration={"status": "Enabled"}, opts=child(self))
        rules = [
            {"id": "abort-incomplete-uploads", "status": "Enabled", "filter": {},
             "abort_incomplete_multipart_upload": {"days_after_initiation": 7}},
            {"id": "expire-old-versions", "status": "Enabled", "filter": {},
             "noncurrent_version_expiration": {"noncurrent_days": args.noncurrent_days}},
        ]
        self.lifecycle = aws.s3.BucketLifecycleConfiguration(
            f"{name}-snapshots", bucket=bucket_id, rules=rules,
            opts=child(self, depends_on=[self.versioning]))
        self.policy = aws.s3.BucketPolicy(
            f"{name}-snapshots", bucket=bucket_id,
            policy=policy_output({
                "Sid": "DenyPlainHttp", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
                "Resource": [self.bucket.arn, self.bucket.arn.apply(lambda a: f"{a}/*")],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}}}),
            opts=child(self, depends_on=[self.public_access_block]))
        self.object_lock = None
        if args.object_lock:
            self.object_lock = aws.s3.BucketObjectLockConfiguration(
                f"{name}-snapshots", bucket=bucket_id,
                rule={"default_retention": {"mode": args.object_lock_mode,
                                            "days": args.object_lock_days}},
                opts=child(self, depends_on=[self.versioning]))
        self.register_outputs({"bucket_name": bucket_id, "bucket_arn": self.bucket.arn})
