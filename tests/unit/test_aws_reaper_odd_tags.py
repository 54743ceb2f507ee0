"""The reaper reads tags anyone who may tag an instance can write: one instance's odd
`fleet:deadline` ("9999-12-31T23:59:59Z", at the end of time, or "nan", or empty) must neither stop
the pass (it raised OverflowError adding the grace, and the Lambda ended no machine at all) nor
spare another instance that is past its expiry."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from fleet.providers.aws.reap import reap


class EC2:
    def __init__(self, instances):
        self.instances, self.terminated = instances, []

    def get_paginator(self, _name):
        page = {"Reservations": [{"Instances": self.instances}]}
        return type("Pages", (), {"paginate": lambda self, **kw: [page]})()

    def terminate_instances(self, InstanceIds):
        self.terminated += InstanceIds


def _instance(iid, **tags):
    now = datetime.now(timezone.utc)
    return {"InstanceId": iid, "State": {"Name": "running"}, "LaunchTime": now - timedelta(hours=1),
            "Tags": [{"Key": k, "Value": v} for k, v in {"fleet:lease": "l-1", "fleet:stack": "s", **tags}.items()]}


@pytest.mark.parametrize("deadline", ["9999-12-31T23:59:59Z", "9999-12-31T23:59:59+00:00", "nan", "", "９９"])
def test_an_odd_deadline_tag_neither_stops_the_pass_nor_ends_its_instance(deadline):
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    ec2 = EC2([_instance("i-odd", **{"fleet:deadline": deadline, "fleet:expires-at": future}),
               _instance("i-expired", **{"fleet:expires-at": "2000-01-01T00:00:00Z"})])
    actions = reap(ec2, None, stack="s")
    assert ec2.terminated == ["i-expired"]
    assert [a["instance_id"] for a in actions] == ["i-expired"]
