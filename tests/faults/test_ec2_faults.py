"""EC2 throttling, capacity and 5xx errors against moto (injected at the botocore boundary).

After each case, moto itself is asked (a clean client) whether any instance of the case's project
is still alive: a failed lease cleans up after itself, a failed release leaves something `fleet
down`/`fleet reap` (tried again here) terminates, and every failure is one FleetError line.
"""
from __future__ import annotations

import hashlib
import random

import pytest

from fleet.errors import CapacityError, FleetError
from fleet.plan import make_plan
from tests.fixtures.aws import NoConnectAddressMap, fast_sleep, point_boto3_at, reset_moto

from .ec2 import CAPACITY, SERVER, THROTTLE, UNAVAILABLE, EC2Faults, alive_instances, fast_retries

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def stack(moto_server):
    from fleet.providers.aws.outputs import load_outputs
    from fleet.providers.aws.sandbox import create_stack
    with pytest.MonkeyPatch.context() as mp:
        point_boto3_at(mp, moto_server)
        yield load_outputs(create_stack())
    reset_moto(moto_server)


@pytest.fixture
def project(request):
    return "f-" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:10]


@pytest.fixture
def aws(stack, project, fleet_home, moto_server, monkeypatch):
    from fleet.providers.aws.provider import AWSProvider
    point_boto3_at(monkeypatch, moto_server)
    fast_retries(monkeypatch)
    provider = AWSProvider(outputs=stack, sandbox=NoConnectAddressMap(), sleep=fast_sleep, ready_timeout_s=20)
    yield provider
    left = alive_instances(project)
    if left:
        provider.ec2.terminate_instances(InstanceIds=left)
    assert not left, f"instances left running: {left}"


def _plan(provider, project, gpus=8, template="aws-4gpu"):
    return make_plan(provider="aws", template=provider.templates()[template], gpus=gpus, max_duration_s=600,
                     heartbeat_ttl_s=60, project=project, user="faults")


def _one_line(exc: BaseException) -> None:
    assert isinstance(exc, FleetError), repr(exc)
    assert "\n" not in str(exc) and "Traceback" not in str(exc)


def test_throttled_launch_is_retried_and_launches_once(aws, project):
    faults = EC2Faults(plan={"RunInstances": [THROTTLE, THROTTLE, THROTTLE]}).attach(aws.ec2)
    lease = aws.lease(_plan(aws, project), "l-thr", 60)
    try:
        assert len(lease.machines) == 2 and len(alive_instances(project)) == 2   # no double launch
        assert faults.injected.count("RunInstances:RequestLimitExceeded") == 3
    finally:
        aws.release(lease)
    assert alive_instances(project) == []


def test_no_capacity_anywhere_is_one_line_and_nothing_runs(aws, project):
    EC2Faults(plan={"RunInstances": [CAPACITY] * 50}).attach(aws.ec2)
    with pytest.raises(CapacityError) as err:
        aws.lease(_plan(aws, project), "l-cap", 60)
    _one_line(err.value)
    assert alive_instances(project) == []


def test_5xx_while_waiting_for_running_terminates_what_was_launched(aws, project):
    # More failures than botocore's attempts: the wait fails, and the lease must clean up.
    EC2Faults(plan={"DescribeInstances": [SERVER] * 9}).attach(aws.ec2)
    try:
        lease = aws.lease(_plan(aws, project), "l-5xx", 60)
    except FleetError as exc:
        _one_line(exc)
    else:
        aws.release(lease)
    assert alive_instances(project) == []


def test_release_failing_with_5xx_is_reported_and_a_retry_terminates(aws, project):
    lease = aws.lease(_plan(aws, project), "l-rel", 60)
    faults = EC2Faults(plan={"TerminateInstances": [UNAVAILABLE] * 9}).attach(aws.ec2)
    with pytest.raises(FleetError) as err:
        aws.release(lease)
    _one_line(err.value)
    assert len(alive_instances(project)) == 2          # still there: the user was told, not lied to
    faults.detach(aws.ec2)
    aws.release(lease)                                  # what `fleet down` does again
    assert alive_instances(project) == []


@pytest.mark.parametrize("seed", [3, 11, 2024])
def test_random_ec2_errors(aws, project, seed):
    rng = random.Random(seed)
    faults = EC2Faults(rate=0.35, rng=rng).attach(aws.ec2)
    lease_id = f"l-rnd{seed}"
    lease = None
    try:
        lease = aws.lease(_plan(aws, project, gpus=4 * rng.randint(1, 3)), lease_id, 60)
    except FleetError as exc:
        _one_line(exc)
    for _ in range(3):                                 # release, as fleet down would, until it sticks
        try:
            if lease is not None:
                aws.release(lease)
            else:
                aws._cleanup(lease_id)
            break
        except FleetError as exc:
            _one_line(exc)
    faults.detach(aws.ec2)
    assert faults.injected, "the seed injected nothing: pick another"
    assert alive_instances(project) == [], faults.injected
