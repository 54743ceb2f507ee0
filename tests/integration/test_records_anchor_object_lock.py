"""With an S3 store in an Object Lock bucket (moto server), every chain tip is a retained object
version: rewriting records, recomputing the chain, rewriting the local anchor and even putting a
forged tip and a delete marker into the bucket is still caught by `fleet audit --verify`."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from botocore.exceptions import ClientError

from fleet.records.chain import RunRecord, append_record
from fleet.state.db import Database
from tests.conftest import run_fleet
from tests.unit.test_records_anchor_tamper import rewrite_and_rechain

BUCKET, URL, KEY = "fleet-locked", "s3://fleet-locked/team", "team/records/tip"


@pytest.fixture
def locked(aws_env, fleet_home, monkeypatch):
    monkeypatch.delenv("FLEET_RECORDS_KEY", raising=False)
    monkeypatch.delenv("FLEET_RECORDS_KEY_FILE", raising=False)
    s3 = boto3.client("s3", endpoint_url=aws_env)
    s3.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
    db = Database(fleet_home / "state.db")
    yield s3, db
    db.close()


def _append(db, i):
    return append_record(RunRecord(run_id=f"r-{i}", command=f"train {i}", user="tester", store=URL), db)


def test_each_tip_is_a_retained_version_that_cannot_be_deleted(locked):
    s3, db = locked
    recs = [_append(db, i) for i in range(1, 4)]
    versions = s3.list_object_versions(Bucket=BUCKET, Prefix=KEY)["Versions"]
    assert len(versions) == 3
    tips = [json.loads(s3.get_object(Bucket=BUCKET, Key=KEY, VersionId=v["VersionId"])["Body"].read())
            for v in versions]
    assert sorted(t["hash"] for t in tips) == sorted(r.hash for r in recs)
    head = s3.head_object(Bucket=BUCKET, Key=KEY, VersionId=versions[-1]["VersionId"])
    assert head["ObjectLockMode"] == "GOVERNANCE" and head["ObjectLockRetainUntilDate"].year >= 2030
    with pytest.raises(ClientError, match="AccessDenied"):
        s3.delete_object(Bucket=BUCKET, Key=KEY, VersionId=versions[-1]["VersionId"])


def test_a_short_default_rule_still_retains_tips_for_ten_years(locked):
    """A fleet stack's bucket has a 30-day default rule (sized for chunks) and a lifecycle that
    expires old versions: tips retained only 30 days would then vanish, and with them the audit's
    hold on every record they pinned."""
    s3, db = locked
    s3.put_object_lock_configuration(Bucket=BUCKET, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 30}}})
    _append(db, 1)
    head = s3.head_object(Bucket=BUCKET, Key=KEY)
    until = head["ObjectLockRetainUntilDate"]
    assert head["ObjectLockMode"] == "GOVERNANCE"
    assert until - datetime.now(timezone.utc) > timedelta(days=3649), until


def test_a_rechained_rewrite_with_forged_local_and_s3_tips_is_caught(locked, tmp_path):
    s3, db = locked
    for i in range(1, 4):
        _append(db, i)
    proc = run_fleet(["audit", "--verify"], cwd=tmp_path)
    assert proc.returncode == 0 and "chain intact" in proc.stdout and "neither signed" not in proc.stderr
    rewrite_and_rechain(db, 2, exit_status=0)
    forged = db.execute("SELECT seq, run_id, hash FROM run_records ORDER BY seq DESC LIMIT 1")[0]
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=json.dumps(dict(forged)).encode())   # a new, forged version
    s3.delete_object(Bucket=BUCKET, Key=KEY)                                       # and a delete marker on top
    proc = run_fleet(["audit", "--verify"], cwd=tmp_path)
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert "chain intact" not in proc.stdout
    assert "(run r-2) anchored in s3://fleet-locked/team/records/tip" in proc.stderr
    assert "is no longer in the database" in proc.stderr


def test_an_s3_store_without_its_anchor_fails_the_audit(aws_env, fleet_home, tmp_path):
    s3 = boto3.client("s3", endpoint_url=aws_env)
    s3.create_bucket(Bucket="fleet-plain")
    db = Database(fleet_home / "state.db")
    try:
        append_record(RunRecord(run_id="r-1", command="train", user="tester", store="s3://fleet-plain/t"), db)
        s3.delete_object(Bucket="fleet-plain", Key="t/records/tip")
        proc = run_fleet(["audit", "--verify"], cwd=tmp_path)
        assert proc.returncode == 5 and "s3://fleet-plain/t/records/tip is missing" in proc.stderr
    finally:
        db.close()
