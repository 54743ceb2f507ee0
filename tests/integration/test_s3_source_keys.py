"""`[data] x = "s3://…"` over a bucket holding keys a careless uploader leaves: each is taken as
written, or refused at `fleet up`'s pin with one line before anything is leased (moto on loopback)."""
from __future__ import annotations

import boto3
import pytest

from fleet.errors import UsageError
from fleet.snapshots import open_store
from fleet.snapshots.sources import list_s3, pin_data


@pytest.fixture
def s3(aws_env):
    client = boto3.client("s3", endpoint_url=aws_env)
    client.create_bucket(Bucket="odd")
    return client


def test_an_object_that_is_also_a_prefix_is_refused_at_pin_time(fleet_home, tmp_path, s3):
    # Both "logs" and "logs/a" exist: one file and one directory at the same path on the machine, whose
    # tree builder refuses it ("logs is a symlink or a file in the snapshot"), but only after the lease.
    s3.put_object(Bucket="odd", Key="d/logs", Body=b"x")
    s3.put_object(Bucket="odd", Key="d/logs/a.txt", Body=b"y")
    s3.put_object(Bucket="odd", Key="d/logs-2", Body=b"z")
    with pytest.raises(UsageError) as err:
        pin_data({"raw": "s3://odd/d"}, tmp_path, open_store(None))
    line = err.value.one_line()
    assert "'d/logs' is both an object and the prefix of 'd/logs/a.txt'" in line and "\n" not in line


def test_odd_but_clean_keys_are_pinned_as_written(fleet_home, s3):
    keys = ["d/sp ace.txt", "d/ünï.txt", "d/tab\there", "d/a;$(touch x)", "d/folder/"]   # the last: a console folder
    for k in keys:
        s3.put_object(Bucket="odd", Key=k, Body=b"1" if k[-1] != "/" else b"")
    listing = list_s3("s3://odd/d/")
    assert sorted(o[0] for o in listing.objects) == sorted(k[2:] for k in keys[:-1])


@pytest.mark.parametrize("key, why", [("d/sub/a\x00b.txt", "a NUL"), ("d/sub/" + "x" * 256, "longer than 255 bytes"),
                                      ("d/" + "é" * 128 + "/f", "longer than 255 bytes")], ids=["nul", "long", "utf8"])
def test_a_key_no_filesystem_can_hold_as_a_path_is_refused_at_pin_time(fleet_home, tmp_path, s3, key, why):
    # Taken as clean, it failed only on the machines, after the lease: "embedded null byte" (naming no
    # key) or "[Errno 36] File name too long". S3 keys may hold NUL and run to 1024 bytes.
    s3.put_object(Bucket="odd", Key=key, Body=b"1")
    s3.put_object(Bucket="odd", Key="d/ok.txt", Body=b"2")
    with pytest.raises(UsageError) as err:
        pin_data({"raw": "s3://odd/d"}, tmp_path, open_store(None))
    line = err.value.one_line()
    assert line.startswith("[data] s3://odd/d: object key ") and why in line and "\n" not in line
    assert len(line) < 400                                   # the key is cut short, not quoted whole
