"""The AWS provider against a real moto server: mixes, launch parameters, fallbacks, idempotency,
pagination, errors. Capacity and throttling errors (which moto cannot produce) are injected at the
botocore boundary. After every test, no instance tagged with the test's project is left running."""
from __future__ import annotations

import base64
import hashlib
from decimal import Decimal

import pytest

from fleet.errors import CapacityError, ConfigError, EnvironmentProblem, InfrastructureError, NotFound, UsageError
from fleet.plan import make_plan
from fleet.providers.aws import launch as launch_mod
from fleet.providers.aws.launch import find_instances
from fleet.providers.aws.outputs import load_outputs
from fleet.providers.aws.provider import AWSProvider
from fleet.providers.aws.sandbox import DEFAULT_TEMPLATES, create_stack
from tests.fixtures.aws import NoConnectAddressMap, fast_sleep, inject, point_boto3_at, reset_moto

pytestmark = pytest.mark.timeout(120)

TEMPLATES = dict(DEFAULT_TEMPLATES, mix={"instance_types": ["p4d.24xlarge", "g5.12xlarge", "g5.xlarge"],
                                         "gpus_per_machine": 1, "spot": False})
ALIVE = ("pending", "running", "stopping", "stopped")


@pytest.fixture(scope="module")
def stack(moto_server):
    """One stack for the module (creating it costs seconds); tests keep apart by lease/project tags."""
    with pytest.MonkeyPatch.context() as mp:
        point_boto3_at(mp, moto_server)
        yield load_outputs(create_stack(templates=TEMPLATES))
    reset_moto(moto_server)


@pytest.fixture
def project(request):
    return "t-" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:10]


@pytest.fixture
def provider(stack, project, fleet_home):
    p = AWSProvider(outputs=stack, sandbox=NoConnectAddressMap(), sleep=fast_sleep, ready_timeout_s=30)
    yield p
    left = find_instances(p.ec2, {"fleet:project": project}, states=ALIVE)
    if left:   # clean up before failing, so one failure does not cascade
        p.ec2.terminate_instances(InstanceIds=[i["InstanceId"] for i in left])
    assert not left, f"test left {len(left)} instance(s) running"


def plan_for(provider, template, gpus, project, max_s=600):
    """The plan a run makes: for the mix the provider chose, once (contract v2)."""
    return make_plan(provider="aws", mix=provider.offers(template, gpus)[0], max_duration_s=max_s,
                     heartbeat_ttl_s=60, project=project, user="tester")


def count_calls(ec2):
    calls: list[str] = []
    ec2.meta.events.register("before-call.ec2.*", lambda model, **_: calls.append(model.name))
    return calls


@pytest.mark.parametrize("gpus, expected", [
    (1, [("g5.xlarge", 1)]),
    (4, [("g5.xlarge", 4), ("g5.12xlarge", 1)]),
    (8, [("g5.xlarge", 8), ("g5.12xlarge", 2), ("p4d.24xlarge", 1)]),
    (16, [("g5.xlarge", 16), ("g5.12xlarge", 4), ("p4d.24xlarge", 2)]),
])
def test_mix_selection_cheapest_first_and_leases_it(provider, project, gpus, expected):
    offers = provider.offers("mix", gpus)
    assert [(o.instance_type, o.machines) for o in offers] == expected
    assert [o.price_per_hour for o in offers] == sorted(o.price_per_hour for o in offers)
    assert offers[0].price_per_hour == Decimal("1.006") * gpus
    lease = provider.lease(plan_for(provider, "mix", gpus, project), f"l-mix{gpus}", 60)
    try:
        assert sum(len(m.gpu_slots) for m in lease.machines) == gpus
        assert {m.instance_type for m in lease.machines} == {expected[0][0]}
        assert len(lease.machines) == expected[0][1]
    finally:
        provider.release(lease)


def test_price_override_reorders_offers(stack, project, fleet_home):
    class Cfg:
        aws: dict = {}
        prices = {"p4d.24xlarge": "1.50"}
    p = AWSProvider(Cfg(), outputs=stack, sandbox=NoConnectAddressMap())
    first = p.offers("mix", 8)[0]
    assert (first.instance_type, first.price_per_hour, first.price_source) == \
        ("p4d.24xlarge", Decimal("1.50"), "fleet.toml [prices]")


def test_one_batched_call_with_tags_imdsv2_terminate_and_userdata(provider, project):
    calls = count_calls(provider.ec2)
    lease = provider.lease(plan_for(provider, "aws-4gpu", 8, project), "l-params", 120)
    try:
        assert calls.count("RunInstances") == 1 and len(lease.machines) == 2
        ec2 = provider.ec2
        inst = find_instances(ec2, {"fleet:lease": "l-params"})
        tags = {t["Key"]: t["Value"] for t in inst[0]["Tags"]}
        assert tags["fleet:lease"] == "l-params" and tags["fleet:project"] == project
        assert tags["fleet:user"] == "tester" and tags["fleet:run"] and tags["fleet:expires-at"].endswith("Z")
        # the stack's controller policy lets its users end only their own stack's instances
        assert provider.outputs.stack and tags["fleet:stack"] == provider.outputs.stack
        assert inst[0]["MetadataOptions"]["HttpTokens"] == "required"
        iid = inst[0]["InstanceId"]
        attr = ec2.describe_instance_attribute(InstanceId=iid, Attribute="instanceInitiatedShutdownBehavior")
        assert attr["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
        vols = ec2.describe_volumes(Filters=[{"Name": "tag:fleet:lease", "Values": ["l-params"]}])["Volumes"]
        assert len(vols) >= 2
        user_data = base64.b64decode(ec2.describe_instance_attribute(
            InstanceId=iid, Attribute="userData")["UserData"]["Value"]).decode()
        m = lease.machines[0]
        assert "BEGIN OPENSSH PRIVATE KEY" in user_data and m.host_key.split()[1] in user_data
        assert "agent.py watchdog" in user_data and "--poweroff" in user_data
        assert m.host == "127.0.0.1"                  # the address map, never the fake 10.x address
        assert [s.state for s in provider.describe(lease)] == ["running", "running"]
    finally:
        provider.release(lease)
    assert {s.state for s in provider.describe(lease)} == {"gone"}
    provider.release(lease)                           # idempotent: already gone is fine


def test_spot_falls_back_to_on_demand(provider, project):
    inj = inject(provider.ec2, lambda p: "InsufficientInstanceCapacity"
                 if p.get("InstanceMarketOptions.MarketType") == "spot" else None)
    plan = plan_for(provider, "aws-1gpu", 1, project)
    lease = provider.lease(plan, "l-spot", 60)
    try:
        assert not any(m.spot for m in lease.machines)
        spot_tries = [p for p in inj.seen if p.get("InstanceMarketOptions.MarketType") == "spot"]
        # The chosen mix in every AZ, then on-demand: never another mix than the one the budget priced.
        assert len(spot_tries) == len(provider.outputs.subnets)
        assert {p["InstanceType"] for p in inj.seen} == {plan.instance_type}
        assert inj.seen[-1].get("InstanceMarketOptions.MarketType") is None
    finally:
        provider.release(lease)


def test_spot_used_when_available(provider, project):
    lease = provider.lease(plan_for(provider, "aws-1gpu", 1, project), "l-spot-ok", 60)
    try:
        assert all(m.spot for m in lease.machines)
    finally:
        provider.release(lease)


def test_az_fallback(provider, project):
    first_az, first_subnet = next(iter(provider.outputs.subnets.items()))
    inject(provider.ec2, lambda p: "InsufficientInstanceCapacity"
           if p.get("SubnetId") == first_subnet else None)
    lease = provider.lease(plan_for(provider, "aws-4gpu", 4, project), "l-az", 60)
    try:
        azs = {m.provider_ref["az"] for m in lease.machines}
        assert azs and first_az not in azs
    finally:
        provider.release(lease)


def test_every_az_out_of_capacity_is_one_line_and_leaves_nothing(provider, project):
    inject(provider.ec2, lambda p: "InsufficientInstanceCapacity")
    with pytest.raises(CapacityError) as err:
        provider.lease(plan_for(provider, "aws-4gpu", 4, project), "l-nocap", 60)
    assert "no capacity" in str(err.value) and "\n" not in str(err.value)
    assert not find_instances(provider.ec2, {"fleet:lease": "l-nocap"})


def test_vcpu_limit_is_a_quota_error_tried_once_per_family(provider, project):
    inj = inject(provider.ec2, lambda p: "VcpuLimitExceeded")
    with pytest.raises(CapacityError) as err:
        provider.lease(plan_for(provider, "aws-8gpu", 8, project), "l-quota", 60)
    assert "account limit" in str(err.value) and "quota" in str(err.value)
    families = {(p["InstanceType"].split(".")[0], p.get("InstanceMarketOptions.MarketType")) for p in inj.seen}
    assert len(inj.seen) == len(families)             # other AZs share the quota: not retried there


def test_retried_launch_launches_once(provider, project):
    """The RunInstances response is lost after EC2 acted (connection dropped): the retry must adopt
    the instances, not launch more. (moto ignores ClientToken, so this proves fleet's own lookup.)"""
    from botocore.exceptions import ConnectionClosedError
    state = {"dropped": 0}

    def drop_response(**_kw):
        if not state["dropped"]:
            state["dropped"] += 1
            raise ConnectionClosedError(endpoint_url="moto")
    provider.ec2.meta.events.register("after-call.ec2.RunInstances", drop_response)
    calls = count_calls(provider.ec2)
    lease = provider.lease(plan_for(provider, "aws-4gpu", 8, project), "l-retry", 60)
    try:
        assert state["dropped"] == 1 and calls.count("RunInstances") == 1
        assert len(find_instances(provider.ec2, {"fleet:lease": "l-retry"})) == 2 == len(lease.machines)
        # The whole lease retried (controller restarted) adopts the same instances too.
        again = provider.lease(plan_for(provider, "aws-4gpu", 8, project), "l-retry", 60)
        assert {m.id for m in again.machines} == {m.id for m in lease.machines}
        assert calls.count("RunInstances") == 1
    finally:
        provider.release(lease)


def test_throttling_is_retried_by_botocore(provider, project):
    throttled = {"n": 0}

    def rule(_params):
        if throttled["n"] < 2:
            throttled["n"] += 1
            return "RequestLimitExceeded"
        return None
    inj = inject(provider.ec2, rule)
    lease = provider.lease(plan_for(provider, "aws-4gpu", 4, project), "l-throttle", 60)
    try:
        assert len(inj.seen) == 3 and len(find_instances(provider.ec2, {"fleet:lease": "l-throttle"})) == 1
    finally:
        provider.release(lease)


def test_over_100_instances_paginate(provider, project, monkeypatch):
    monkeypatch.setattr(launch_mod, "PAGE_SIZE", 50)
    calls = count_calls(provider.ec2)
    lease = provider.lease(plan_for(provider, "aws-1gpu", 120, project, max_s=900), "l-many", 60)
    try:
        assert len(lease.machines) == 120 and len({m.id for m in lease.machines}) == 120
        assert [m.node_rank for m in lease.machines] == list(range(120))
        assert calls.count("RunInstances") == 1
        assert [s.state for s in provider.describe(lease)].count("running") == 120
    finally:
        provider.release(lease)
    assert not find_instances(provider.ec2, {"fleet:lease": "l-many"})


def test_failure_after_launch_terminates_everything(provider, project):
    import threading

    class Breaks(NoConnectAddressMap):
        lock = threading.Lock()      # binds run in a thread pool: exactly one of the two fails

        def bind(self, instance_id, *a, **kw):
            with self.lock:
                if self.bound:
                    raise InfrastructureError("sandbox machine would not start")
                return super().bind(instance_id, *a, **kw)
    provider._sandbox = Breaks()
    with pytest.raises(InfrastructureError, match="would not start"):
        provider.lease(plan_for(provider, "aws-4gpu", 8, project), "l-broken", 60)
    assert not find_instances(provider.ec2, {"fleet:lease": "l-broken"})


def test_bad_input_errors(provider, project, stack, monkeypatch):
    with pytest.raises(UsageError, match="exactly 3 GPUs.*multiple of"):
        provider.offers("aws-8gpu", 3)
    plan = plan_for(provider, "aws-4gpu", 4, project)
    plan.template = type(plan.template)(**{**plan.template.__dict__, "name": "aws-99gpu"})
    with pytest.raises(NotFound, match="aws-99gpu.*not in the stack outputs"):
        provider.lease(plan, "l-notpl", 60)
    moon = load_outputs(dict(stack.to_dict(), region="us-moon-1"))
    with pytest.raises(ConfigError, match="unknown AWS region 'us-moon-1'"):
        AWSProvider(outputs=moon).templates()


def test_no_credentials_is_one_line(stack, monkeypatch, tmp_path, fleet_home):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")     # never probe 169.254.169.254
    with pytest.raises(EnvironmentProblem, match="no AWS credentials"):
        AWSProvider(outputs=stack).templates()


def test_refuses_fake_addresses_without_sandbox(stack, project, fleet_home):
    p = AWSProvider(outputs=stack, sandbox=False, sleep=fast_sleep)
    with pytest.raises(EnvironmentProblem, match="FLEET_AWS_SANDBOX"):
        p.lease(plan_for(p, "aws-1gpu", 1, project), "l-fake", 60)
    assert not find_instances(p.ec2, {"fleet:lease": "l-fake"})


def test_expires_at_tag_is_capped_by_the_budget_deadline(provider, project):
    """The reaper's line (fleet:expires-at) must not outlast the budget, even if max_duration is long."""
    from datetime import datetime, timezone
    plan = plan_for(provider, "aws-1gpu", 1, project, max_s=8 * 3600)
    plan.budget_deadline_s = 600
    lease = provider.lease(plan, "l-budget-tag", 60)
    try:
        tags = {t["Key"]: t["Value"] for t in find_instances(provider.ec2, {"fleet:lease": "l-budget-tag"})[0]["Tags"]}
        expires = datetime.fromisoformat(tags["fleet:expires-at"].replace("Z", "+00:00"))
        life = (expires - datetime.now(timezone.utc)).total_seconds()
        from fleet.providers.aws.provider import EXPIRY_GRACE_S
        assert life <= 600 + EXPIRY_GRACE_S + 5
    finally:
        provider.release(lease)


@pytest.mark.parametrize("shutting_down", [False, True], ids=["running", "interpreter-shutdown"])
def test_a_failed_bring_up_leaves_no_machine_starting_while_the_lease_is_cleaned_up(provider, project, monkeypatch,
                                                                                   shutting_down):
    """One machine fails to come up: the others' bring-up ends before the lease's instances are
    terminated. At interpreter shutdown the bring-ups run on plain threads, which the pool's exit
    did not wait for: they went on against instances being terminated."""
    import time

    import concurrent.futures.thread as executor_thread
    events: list[str] = []
    cleanup = provider._cleanup

    def machine(inst, rank, *_args):
        if rank == 0:
            raise InfrastructureError("rank 0 never came up")
        time.sleep(1.0)
        events.append(f"rank {rank} ended")
        raise InfrastructureError("too late")
    monkeypatch.setattr(provider, "_machine", machine)
    monkeypatch.setattr(provider, "_cleanup", lambda lease_id: (events.append("cleanup"), cleanup(lease_id)))
    if shutting_down:
        monkeypatch.setattr(executor_thread, "_shutdown", True)
    with pytest.raises(InfrastructureError, match="rank 0 never came up"):
        provider.lease(plan_for(provider, "mix", 2, project), "l-bringup2", 60, on_machine=lambda m: None)
    time.sleep(1.5)                                  # a bring-up still going on would end by now
    assert events[-1] == "cleanup" and events[:-1] in ([], ["rank 1 ended"]), events   # or cancelled unstarted
