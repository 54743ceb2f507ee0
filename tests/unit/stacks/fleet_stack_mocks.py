"""Pulumi unit-test mocks for the fleet stack (helpers shared by tests/unit/stacks).

`run_stack(...)` installs mocks (`pulumi.runtime.set_mocks(..., preview=False)`) *before* the
program runs, then runs the real program file `stacks/__main__.py` with the given stack config —
the same file `pulumi up` runs, with no test-only branches — and returns every registered resource
(type, name, inputs, parent) and the resolved `fleet` output.

The default config is Pulumi.dev.yaml.example itself, so the shipped example must validate.
"""
from __future__ import annotations

import json
import runpy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pulumi = pytest.importorskip("pulumi")
pytest.importorskip("pulumi_aws")
yaml = pytest.importorskip("yaml")

from pulumi.runtime import mocks as pulumi_mocks  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
EXAMPLE = REPO / "Pulumi.dev.yaml.example"
PROJECT_TAGS = ("fleet:project", "fleet:stack", "managed-by")
AZS = ["us-east-1a", "us-east-1b", "us-east-1c", "us-east-1d"]


@dataclass
class Registered:
    type: str
    name: str
    inputs: dict[str, Any]
    parent: str
    custom: bool
    urn: str = ""


@dataclass
class StackRun:
    resources: list[Registered] = field(default_factory=list)
    outputs: dict[str, Any] | None = None
    invokes: list[tuple[str, dict]] = field(default_factory=list)

    def of_type(self, type_: str) -> list[Registered]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str) -> Registered:
        found = self.of_type(type_)
        assert len(found) == 1, f"expected one {type_}, got {[r.name for r in found]}"
        return found[0]

    @property
    def custom(self) -> list[Registered]:
        return [r for r in self.resources if r.custom]


def _arn(service: str, kind: str, name: str) -> str:
    return f"arn:aws:{service}:us-east-1:123456789012:{kind}{name}"


class FleetMocks(pulumi.runtime.Mocks):
    """Gives every resource the computed attributes the program reads (ids, ARNs, names) and answers
    the two invokes: the AZ list and the baked-image lookup by recipe-hash tag."""

    def __init__(self, run: StackRun, images: dict[str, str] | None, azs: list[str]):
        self.run = run
        self.images = images      # recipe hash → AMI id; None: every hash has an image
        self.azs = azs

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        state = dict(args.inputs)
        rid = f"{args.name}-id"
        t = args.typ
        if t == "aws:s3/bucket:Bucket":
            rid = (args.inputs.get("bucketPrefix") or "bucket-") + "abc123"
            state.update(bucket=rid, arn=f"arn:aws:s3:::{rid}")
        elif t == "aws:iam/role:Role":
            state.update(arn=_arn("iam", "role/", args.name), name=args.name, uniqueId="AROAEXAMPLE")
        elif t == "aws:iam/instanceProfile:InstanceProfile":
            state.update(arn=_arn("iam", "instance-profile/", args.name), name=args.name)
        elif t == "aws:iam/policy:Policy":
            state.update(arn=_arn("iam", "policy/", args.inputs.get("name", args.name)))
        elif t == "aws:lambda/function:Function":
            state.update(arn=_arn("lambda", "function:", args.inputs.get("name", args.name)))
        elif t == "aws:cloudwatch/logGroup:LogGroup":
            state.update(arn=_arn("logs", "log-group:", args.inputs.get("name", args.name)))
        elif t == "aws:cloudwatch/eventRule:EventRule":
            state.update(arn=_arn("events", "rule/", args.name), name=args.name)
        elif t == "aws:ec2/launchTemplate:LaunchTemplate":
            rid = "lt-" + args.name
        elif t == "aws:ec2/securityGroup:SecurityGroup":
            rid = "sg-" + args.name
        elif t == "aws:ec2/vpc:Vpc":
            rid = "vpc-" + args.name
        elif t == "aws:ec2/subnet:Subnet":
            rid = "subnet-" + args.inputs.get("availabilityZone", args.name)
        return rid, state

    def call(self, args: pulumi.runtime.MockCallArgs):
        self.run.invokes.append((args.token, dict(args.args)))
        if args.token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            return {"id": "us-east-1", "names": list(self.azs),
                    "zoneIds": [f"use1-az{i}" for i in range(len(self.azs))]}
        if args.token == "aws:ec2/getAmi:getAmi":
            wanted = [f["values"][0] for f in args.args.get("filters", [])
                      if f.get("name") == "tag:fleet:recipe-hash"]
            assert wanted, "image lookup must filter on the fleet:recipe-hash tag"
            h = wanted[0]
            if self.images is not None and h not in self.images:
                # How the engine reports a failed invoke: a check failure, not an exception.
                return {}, [("filters", "Your query returned no results. Please change your "
                                        "search criteria and try again.")]
            ami = self.images[h] if self.images is not None else f"ami-{h[:8]}"
            return {"id": ami, "imageId": ami, "rootDeviceName": "/dev/sda1",
                    "name": f"fleet-x-{h[:12]}", "tags": {"fleet:recipe-hash": h}}
        raise AssertionError(f"unexpected invoke {args.token}")


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """The stock mock monitor, also remembering each registration's parent and custom flag."""

    def __init__(self, mocks: FleetMocks, run: StackRun):
        super().__init__(mocks)
        self.run = run

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            inputs = pulumi.runtime.rpc.deserialize_properties(request.object)
            self.run.resources.append(Registered(request.type, request.name, dict(inputs),
                                                 request.parent, bool(request.custom),
                                                 response.urn))
        return response


def config_values(overrides: dict[str, Any] | None = None, drop: tuple[str, ...] = ()) -> dict[str, str]:
    """The example stack config as Pulumi hands it to a program: every value a string, structured
    values as JSON text."""
    config = dict(yaml.safe_load(EXAMPLE.read_text())["config"])
    config.update(overrides or {})
    for key in drop:
        config.pop(key, None)
    out = {}
    for key, value in config.items():
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, (list, dict)):
            out[key] = json.dumps(value)
        else:
            out[key] = str(value)
    return out


def _install(run: StackRun, config: dict[str, str], images, azs, stack: str) -> None:
    mocks = FleetMocks(run, images, azs)
    pulumi.runtime.set_mocks(mocks, project="fleet", stack=stack, preview=False,
                             monitor=RecordingMonitor(mocks, run))
    pulumi.runtime.set_all_config(config)


def run_program(overrides: dict[str, Any] | None = None, *, drop: tuple[str, ...] = (),
                images: dict[str, str] | None = None, azs: list[str] | None = None,
                stack: str = "test", run: StackRun | None = None) -> StackRun:
    """Run stacks/__main__.py under mocks; returns resources and the resolved `fleet` output
    (pass `run` to see what was declared even when the program fails)."""
    run = StackRun() if run is None else run
    _install(run, config_values(overrides, drop), images, azs or AZS, stack)
    box: dict[str, Any] = {}

    @pulumi.runtime.test
    def program():
        runpy.run_path(str(REPO / "stacks" / "__main__.py"), run_name="__main__")
        root = pulumi.runtime.settings.get_root_resource()
        return pulumi.Output.from_input(root.outputs["fleet"]).apply(
            lambda v: box.__setitem__("fleet", v))

    program()
    run.outputs = box.get("fleet")
    return run


def run_component(build, *, config: dict[str, str] | None = None, images=None) -> tuple[StackRun, Any]:
    """Declare one component under mocks; `build()` returns (component, output to resolve)."""
    run = StackRun()
    _install(run, config or {}, images, AZS, "test")
    box: dict[str, Any] = {}

    @pulumi.runtime.test
    def declare():
        component, out = build()
        box["component"] = component
        return pulumi.Output.from_input(out).apply(lambda v: box.__setitem__("value", v))

    declare()
    return run, box.get("value")


TAGS = {"fleet:project": "fleet", "fleet:stack": "test", "managed-by": "fleet"}
