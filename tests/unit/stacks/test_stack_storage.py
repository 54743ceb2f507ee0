"""Storage component under Pulumi mocks: a private, encrypted, versioned snapshot bucket."""
from __future__ import annotations

import json

from fleet_stack_mocks import TAGS, run_component

from stacks.components.storage import Storage, StorageArgs


def _declare(**over):
    args = dict(stack="test", object_lock=False, object_lock_days=30, object_lock_mode="GOVERNANCE",
                noncurrent_days=45, force_destroy=False, tags=TAGS)
    args.update(over)

    def build():
        st = Storage("s", StorageArgs(**args))
        return st, st.bucket.id
    return run_component(build)


def test_private_encrypted_versioned():
    run, bucket = _declare()
    pab = run.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").inputs
    assert pab["bucket"] == bucket
    assert all(pab[k] is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls",
                                        "restrictPublicBuckets"))
    sse = run.one("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")
    rule = sse.inputs["rules"][0]
    assert rule["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "aws:kms"
    assert rule["bucketKeyEnabled"] is True
    ver = run.one("aws:s3/bucketVersioning:BucketVersioning").inputs
    assert ver["versioningConfiguration"]["status"] == "Enabled"
    owner = run.one("aws:s3/bucketOwnershipControls:BucketOwnershipControls").inputs
    assert owner["rule"]["objectOwnership"] == "BucketOwnerEnforced"
    policy = json.loads(run.one("aws:s3/bucketPolicy:BucketPolicy").inputs["policy"])
    deny = policy["Statement"][0]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_lifecycle_expires_old_versions_and_no_dead_prefix():
    run, _ = _declare()
    rules = {r["id"]: r for r in run.one(
        "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration").inputs["rules"]}
    assert rules["expire-old-versions"]["noncurrentVersionExpiration"]["noncurrentDays"] == 45
    assert "expire-run-outputs" not in rules     # nothing writes run-outputs/


def test_object_lock_only_when_asked():
    run, _ = _declare()
    assert not run.of_type("aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration")
    assert not run.one("aws:s3/bucket:Bucket").inputs.get("objectLockEnabled")
    run, _ = _declare(object_lock=True, object_lock_days=365, object_lock_mode="COMPLIANCE")
    assert run.one("aws:s3/bucket:Bucket").inputs["objectLockEnabled"] is True
    lock = run.one("aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration").inputs
    assert lock["rule"]["defaultRetention"] == {"mode": "COMPLIANCE", "days": 365}
