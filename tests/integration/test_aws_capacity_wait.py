"""`--wait` on AWS (fleet/providers/aws/capacity.py): no capacity in any AZ, type or market is waited
out instead of exit 10, visible in `fleet queue` with its reason, until a launch succeeds, the wait is
over (one line, exit 10, nothing left running) or Ctrl-C. EC2's capacity errors (which moto cannot
produce) are injected at the botocore boundary of a real moto server, as tests/faults does."""
from __future__ import annotations

import hashlib
import json
import threading
from types import SimpleNamespace

import pytest

from fleet.errors import Cancelled, CapacityError
from fleet.plan import make_plan
from fleet.providers.aws import capacity
from fleet.providers.aws.launch import find_instances
from fleet.providers.aws.outputs import load_outputs
from fleet.providers.aws.provider import AWSProvider
from fleet.providers.aws.sandbox import DEFAULT_TEMPLATES, create_stack
from fleet.providers.base import LeaseWatch, Queueing
from fleet.providers.ssh.queue import WaitQueue
from fleet.state import open_state
from tests.conftest import run_fleet
from tests.fixtures.aws import NoConnectAddressMap, fast_sleep, inject, point_boto3_at, reset_moto

pytestmark = pytest.mark.timeout(120)
ALIVE = ("pending", "running", "stopping", "stopped")


@pytest.fixture(scope="module")
def stack(moto_server):
    with pytest.MonkeyPatch.context() as mp:
        point_boto3_at(mp, moto_server)
        yield load_outputs(create_stack(templates=dict(DEFAULT_TEMPLATES)))
    reset_moto(moto_server)


@pytest.fixture
def project(request):
    return "t-" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:10]


@pytest.fixture
def provider(stack, project, fleet_home, monkeypatch):
    monkeypatch.setattr(capacity, "BACKOFF_START_S", 0.05)     # the same rounds, without the waits
    monkeypatch.setattr(capacity, "BACKOFF_CAP_S", 0.2)
    p = AWSProvider(outputs=stack, sandbox=NoConnectAddressMap(), sleep=fast_sleep, ready_timeout_s=30)
    yield p
    left = find_instances(p.ec2, {"fleet:project": project}, states=ALIVE)
    if left:
        p.ec2.terminate_instances(InstanceIds=[i["InstanceId"] for i in left])
    assert not left, f"test left {len(left)} instance(s) running"


def _plan(provider, template, gpus, project):
    return make_plan(provider="aws", mix=provider.offers(template, gpus)[0], max_duration_s=600,
                     heartbeat_ttl_s=60, project=project, user="tester")


def _waiting() -> list:
    state = open_state()
    try:
        return WaitQueue(state.db).waiting()
    finally:
        state.close()


class Failing:
    """Every RunInstances fails with `codes(params)` for the first `rounds` rounds of attempts."""

    def __init__(self, per_round: int, rounds: int, code):
        self.per_round, self.rounds, self.code, self.calls = per_round, rounds, code, 0

    def __call__(self, params):
        self.calls += 1
        return self.code(params) if self.calls <= self.per_round * self.rounds else None


def test_aws_declares_queueing():
    assert issubclass(AWSProvider, Queueing)


def test_no_capacity_is_waited_out_and_shown_in_fleet_queue(provider, project, experiment):
    plan = _plan(provider, "aws-1gpu", 1, project)             # a spot template: spot, then on-demand
    attempts_per_round = 2 * len(provider.outputs.subnets)       # spot then on-demand, in every AZ
    rule = Failing(attempts_per_round, 3, lambda p: "SpotMaxPriceTooLow"
                   if p.get("InstanceMarketOptions.MarketType") == "spot" else "InsufficientInstanceCapacity")
    inject(provider.ec2, rule)
    seen, listed = [], []

    def on_queue(status):
        seen.append(status)
        if len(seen) == 1:   # what another shell sees meanwhile
            proc = run_fleet(["queue", "--json"], cwd=experiment)
            assert proc.returncode == 0, proc.stderr
            listed.extend(json.loads(proc.stdout)["waiting"])

    watch = LeaseWatch(cancel=threading.Event(), on_queue=on_queue, max_wait_s=60)
    lease = provider.lease(plan, "l-capwait", 60, watch=watch)
    try:
        assert len(lease.machines) == plan.machine_count
        assert len(seen) == 3 and all(s.state == "WAITING" for s in seen)
        want = f"waiting for capacity: {plan.instance_type} in {provider.outputs.region} " \
               "(SpotMaxPriceTooLow, InsufficientInstanceCapacity)"
        assert seen[0].reason == want, seen[0].reason
        assert [(w["lease_id"], w["provider"], w["reason"], w["gpus"]) for w in listed] == \
            [("l-capwait", "aws", want, 1)]
        assert _waiting() == []                                   # it left the queue once launched
    finally:
        provider.release(lease)


def test_a_spot_count_limit_is_waited_on_too(provider, project):
    plan = _plan(provider, "aws-1gpu", 1, project)
    rule = Failing(2 * len(provider.outputs.subnets), 1, lambda p: "MaxSpotInstanceCountExceeded"
                   if p.get("InstanceMarketOptions.MarketType") == "spot" else "InsufficientInstanceCapacity")
    inject(provider.ec2, rule)
    reasons = []
    watch = LeaseWatch(cancel=threading.Event(), on_queue=lambda s: reasons.append(s.reason), max_wait_s=60)
    lease = provider.lease(plan, "l-spotcount", 60, watch=watch)
    try:
        assert lease.machines and len(reasons) == 1
        assert "(MaxSpotInstanceCountExceeded, InsufficientInstanceCapacity)" in reasons[0], reasons
    finally:
        provider.release(lease)


def test_a_wait_that_runs_out_is_one_line_exit_10_and_leaves_nothing(provider, project):
    inject(provider.ec2, lambda p: "InsufficientInstanceCapacity")
    watch = LeaseWatch(cancel=threading.Event(), max_wait_s=0.5)
    with pytest.raises(CapacityError) as err:
        provider.lease(_plan(provider, "aws-4gpu", 4, project), "l-capout", 60, watch=watch)
    assert str(err.value).startswith("waited ") and "for capacity: no capacity for 4 GPUs" in str(err.value)
    assert "\n" not in err.value.one_line() and int(err.value.exit_code) == 10
    assert not find_instances(provider.ec2, {"fleet:lease": "l-capout"}) and _waiting() == []


def test_without_wait_no_capacity_fails_at_once(provider, project):
    inj = inject(provider.ec2, lambda p: "InsufficientInstanceCapacity")
    with pytest.raises(CapacityError):
        provider.lease(_plan(provider, "aws-1gpu", 1, project), "l-nowait", 60)
    assert len(inj.seen) == 2 * len(provider.outputs.subnets) and _waiting() == []   # one round, no queue


def test_ctrl_c_while_waiting_stops_with_nothing_launched(provider, project):
    inject(provider.ec2, lambda p: "InsufficientInstanceCapacity")
    cancel = threading.Event()
    watch = LeaseWatch(cancel=cancel, on_queue=lambda s: cancel.set(), max_wait_s=60)
    with pytest.raises(Cancelled):
        provider.lease(_plan(provider, "aws-1gpu", 1, project), "l-capcancel", 60, watch=watch)
    assert not find_instances(provider.ec2, {"fleet:lease": "l-capcancel"}) and _waiting() == []


def test_a_cloud_waiting_for_capacity_never_holds_up_the_team_hosts(fleet_home):
    from fleet.providers.ssh.queue import reserve_or_wait
    state = open_state()
    try:
        queue = WaitQueue(state.db)
        queue.join(lease_id="l-aws", owner="u", project="p", gpus=8, machines=2, provider="aws",
                   reason="waiting for capacity: g6.12xlarge in us-east-1 (InsufficientInstanceCapacity)")
        queue.join(lease_id="l-ssh", owner="u", project="p", gpus=1, machines=1, provider="ssh", reason="full")
        assert queue.ahead_of("l-ssh", "ssh") == 0 and queue.ahead_of("l-ssh") == 1
        # A newcomer on the team's hosts with free slots does not queue behind the cloud's waiter.
        queue.leave("l-ssh")
        plan = SimpleNamespace(user="u", project="p", gpus=1, machine_count=1)
        waits = []
        watch = LeaseWatch(cancel=threading.Event(), on_queue=waits.append, max_wait_s=5)
        got = reserve_or_wait(state.db, plan, "l-new", [("l-new-n0", 1)], {"h0": 2}, watch, provider="ssh")
        assert [p.host for p in got] == ["h0"] and waits == []       # served at once, never queued
    finally:
        state.close()
