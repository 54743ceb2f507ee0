"""An S3 source object rewritten after its listing was pinned, at the same size, is refused on the
machine (a red-team finding: a multipart object's ETag is no MD5, so only its size was checked, and
the run received content its record says it did not). The machine's GET carries If-Match."""
from __future__ import annotations

import os

import boto3
import pytest

from fleet.snapshots.remote_helper import Failure, Objects
from fleet.snapshots.sources import list_s3

PART = 5 * 1024 * 1024


@pytest.fixture
def s3(aws_env):
    client = boto3.client("s3", endpoint_url=aws_env)
    client.create_bucket(Bucket="data")
    return client


def _multipart(s3, key: str, fill: bytes) -> None:
    upload = s3.create_multipart_upload(Bucket="data", Key=key)["UploadId"]
    parts = []
    for number, body in enumerate([fill * PART, fill * 10], 1):
        etag = s3.upload_part(Bucket="data", Key=key, UploadId=upload, PartNumber=number, Body=body)["ETag"]
        parts.append({"ETag": etag, "PartNumber": number})
    s3.complete_multipart_upload(Bucket="data", Key=key, UploadId=upload, MultipartUpload={"Parts": parts})


def _fetch(listing, tmp_path, name="big.bin"):
    key, size, etag = f"s3://data/ds/{listing.objects[0][0]}", listing.objects[0][2], listing.objects[0][3]
    entry = {"key": key, "size": size, "etag": etag}
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        Objects(listing.presign([key]))((fd, name), name, entry)
    finally:
        os.close(fd)
    return (tmp_path / name).read_bytes()


def test_a_same_size_rewrite_of_a_multipart_object_is_refused(fleet_home, tmp_path, s3):
    _multipart(s3, "ds/big.bin", b"A")
    listing = list_s3("s3://data/ds")
    assert _fetch(listing, tmp_path, "first.bin")[:1] == b"A"             # unchanged: fetched
    _multipart(s3, "ds/big.bin", b"B")                                    # same size, other bytes
    with pytest.raises(Failure, match="changed since it was snapshotted"):
        _fetch(listing, tmp_path)
