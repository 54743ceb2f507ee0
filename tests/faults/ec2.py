"""EC2 errors injected at the botocore boundary (`before-send`) of a real moto server: throttling,
capacity, 5xx. moto cannot produce these; everything else (launch, tags, terminate) is moto's own.
Shared by tests/faults/test_ec2_faults.py and scripts/faults.py."""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from tests.fixtures.aws import ec2_error

ALIVE = ("pending", "running", "stopping", "stopped")
THROTTLE = ("RequestLimitExceeded", 503)
CAPACITY = ("InsufficientInstanceCapacity", 500)
SERVER = ("InternalError", 500)
UNAVAILABLE = ("Unavailable", 503)
KINDS = {"throttle": THROTTLE, "capacity": CAPACITY, "5xx": SERVER, "unavailable": UNAVAILABLE}
OPERATIONS = ("RunInstances", "DescribeInstances", "TerminateInstances", "CreateTags")


@dataclass
class EC2Faults:
    """Fails calls: a fixed script per operation (`plan`: op → codes for successive calls, None passes),
    or at random with a seeded generator (`rate` per call, capacity only on RunInstances)."""

    plan: dict = field(default_factory=dict)
    rate: float = 0.0
    rng: random.Random | None = None
    injected: list = field(default_factory=list)
    calls: dict = field(default_factory=dict)

    def __call__(self, request, operation_name=None, **_kw):
        op = operation_name or _op_from(request)
        n = self.calls[op] = self.calls.get(op, 0) + 1
        code = None
        script = self.plan.get(op)
        if script is not None and n <= len(script):
            code = script[n - 1]
        elif script is None and self.rate and self.rng is not None and self.rng.random() < self.rate:
            kinds = ["throttle", "5xx", "unavailable"] + (["capacity"] if op == "RunInstances" else [])
            code = KINDS[self.rng.choice(kinds)]
        if code:
            self.injected.append(f"{op}:{code[0]}")
            return ec2_error(code[0], status=code[1])
        return None

    def attach(self, ec2) -> "EC2Faults":
        ec2.meta.events.register("before-send.ec2.*", self)
        return self

    def detach(self, ec2) -> None:
        ec2.meta.events.unregister("before-send.ec2.*", self)


def _op_from(request) -> str:
    from tests.fixtures.aws import request_params
    return request_params(request).get("Action", "?")


def fast_retries(monkeypatch) -> None:
    """botocore's back-off sleeps up to 20 s between attempts: the same attempts, without the waits."""
    from botocore.retries import standard
    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, context: 0.001)
    try:
        from botocore.retries import adaptive
        monkeypatch.setattr(adaptive.ClientRateLimiter, "acquire_token", lambda self, **kw: None)
    except (ImportError, AttributeError):
        pass


def alive_instances(project: str) -> list[str]:
    """Asked of moto with a clean client (no injection): instances of the project not terminated."""
    import boto3
    from fleet.providers.aws.launch import find_instances
    ec2 = boto3.client("ec2", region_name="us-east-1")
    return [i["InstanceId"] for i in find_instances(ec2, {"fleet:project": project}, states=ALIVE)]
