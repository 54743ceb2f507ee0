"""The stack-outputs contract: the one structure `stacks/` exports and the AWS provider reads.

The Pulumi program exports a single top-level output named ``fleet``, so
``pulumi stack output --json`` prints ``{"fleet": {...}}``. :func:`load_outputs` accepts that
document or the bare inner structure, from a file path or an already-parsed dict::

    {
      "version": 1,                              # OUTPUTS_VERSION; older → "run `fleet stack up`"
      "region": "us-east-1",
      "project": "fleet", "stack": "dev",        # optional, informational
      "vpc_id": "vpc-0123",
      "subnets": {"us-east-1a": "subnet-aaa",    # availability zone → subnet id; the provider tries
                  "us-east-1b": "subnet-bbb"},   #   AZs in this order when capacity runs out
      "security_group_id": "sg-0123",
      "instance_profile": {"arn": "arn:aws:iam::123:instance-profile/fleet", "name": "fleet"},
      "snapshot_bucket": "fleet-snapshots-abc",
      "templates": {
        "aws-8gpu": {
          "launch_template_id": "lt-0123",
          "instance_types": ["p4d.24xlarge", "g5.48xlarge"],   # allowed types, preferred first
          "gpus_per_machine": 8,
          "gpu_model": "A100",
          "spot": true,                           # try spot first, then on-demand
          "image_id": "ami-0123",                 # optional: the baked image…
          "recipe": "cuda12",                     # …and the recipe it was baked from
          "disk_gb": 200                          # optional
        }
      },
      "reaper": {"function_name": "fleet-reaper", "function_arn": "arn:…",   # optional
                 "schedule": "rate(10 minutes)"}
    }

This module is stdlib-only on purpose: the stacks program (and its tests) import it to check that
what they export parses, without pulling in boto3 or the rest of fleet.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ...errors import ConfigError, EnvironmentProblem, NotFound

OUTPUTS_VERSION = 1
OUTPUT_KEY = "fleet"          # the single top-level Pulumi output holding the structure above
REFRESH_HINT = "run `fleet stack up` (or `pulumi up`) and save `pulumi stack output --json` again"


@dataclass(frozen=True)
class InstanceProfile:
    arn: str
    name: str


@dataclass(frozen=True)
class TemplateOutputs:
    """One machine template as the stack made it: a launch template plus what may be launched from it."""

    name: str
    launch_template_id: str
    instance_types: tuple[str, ...]
    gpus_per_machine: int
    gpu_model: str = ""
    spot: bool = False
    image_id: str | None = None
    recipe: str | None = None
    disk_gb: int | None = None


@dataclass(frozen=True)
class ReaperOutputs:
    function_name: str | None = None
    function_arn: str | None = None
    schedule: str | None = None
    max_lease_hours: int | None = None           # the reaper's hard maximum (None: reap.DEFAULT_MAX_LIFE)


@dataclass(frozen=True)
class StackOutputs:
    version: int
    region: str
    vpc_id: str
    subnets: dict[str, str]                      # AZ → subnet id, in preference order
    security_group_id: str
    instance_profile: InstanceProfile
    snapshot_bucket: str
    templates: dict[str, TemplateOutputs]
    reaper: ReaperOutputs = field(default_factory=ReaperOutputs)
    project: str | None = None
    stack: str | None = None
    controller_policy_arn: str | None = None     # attach to the users / CI role that run fleet
    source: str = "<dict>"                       # where these were read from, for error messages

    def template(self, name: str) -> TemplateOutputs:
        try:
            return self.templates[name]
        except KeyError:
            known = ", ".join(sorted(self.templates)) or "none"
            raise NotFound(f"template {name!r} is not in the stack outputs ({self.source})",
                           hint=f"templates there: {known}; add it to the stack config and run "
                                "`fleet stack up`") from None

    def to_dict(self) -> dict[str, Any]:
        """The bare structure (what the stack exports under ``fleet``)."""
        return {
            "version": self.version, "region": self.region, "project": self.project,
            "stack": self.stack, "vpc_id": self.vpc_id, "subnets": dict(self.subnets),
            "security_group_id": self.security_group_id,
            "instance_profile": {"arn": self.instance_profile.arn, "name": self.instance_profile.name},
            "snapshot_bucket": self.snapshot_bucket,
            "templates": {n: {"launch_template_id": t.launch_template_id,
                              "instance_types": list(t.instance_types),
                              "gpus_per_machine": t.gpus_per_machine, "gpu_model": t.gpu_model,
                              "spot": t.spot, "image_id": t.image_id, "recipe": t.recipe,
                              "disk_gb": t.disk_gb}
                          for n, t in self.templates.items()},
            "reaper": {"function_name": self.reaper.function_name,
                       "function_arn": self.reaper.function_arn, "schedule": self.reaper.schedule,
                       "max_lease_hours": self.reaper.max_lease_hours},
            "controller_policy_arn": self.controller_policy_arn,
        }


class _Reader:
    """Pulls typed values out of the raw dict; every failure is one line naming the key path."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(problem, path=self.source, key=key, hint=REFRESH_HINT)

    def get(self, data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str,
            required: bool = True) -> Any:
        path = f"{where}.{key}" if where else key
        if key not in data or data[key] is None:
            if required:
                raise self.fail(path, "missing from the stack outputs")
            return None
        value = data[key]
        if kind is int and isinstance(value, bool) or not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise self.fail(path, f"expected {names}, got {type(value).__name__} {value!r:.60}")
        if isinstance(value, str) and not value.strip() and required:
            raise self.fail(path, "is empty")
        return value


def _unwrap(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """Accept `{"fleet": {...}}` (pulumi stack output --json) or the bare structure."""
    inner = data.get(OUTPUT_KEY)
    if isinstance(inner, Mapping) and "version" not in data:
        return inner
    if isinstance(inner, str) and "version" not in data:   # `pulumi stack output fleet` printed JSON text
        try:
            parsed = json.loads(inner)
        except ValueError:
            return data
        return parsed if isinstance(parsed, Mapping) else data
    return data


def parse_outputs(data: Mapping[str, Any], source: str = "<dict>") -> StackOutputs:
    if not isinstance(data, Mapping):
        raise ConfigError(f"stack outputs must be a JSON object, got {type(data).__name__}",
                          path=source, hint=REFRESH_HINT)
    data = _unwrap(data)
    r = _Reader(source)
    if "version" not in data:
        raise ConfigError(f"no `{OUTPUT_KEY}` output and no `version` key: not fleet stack outputs",
                          path=source, hint=REFRESH_HINT)
    version = r.get(data, "version", int, "")
    if version < OUTPUTS_VERSION:
        raise ConfigError(f"stack outputs version {version} is older than this fleet reads "
                          f"({OUTPUTS_VERSION})", path=source, hint=REFRESH_HINT)
    if version > OUTPUTS_VERSION:
        raise ConfigError(f"stack outputs version {version} is newer than this fleet reads "
                          f"({OUTPUTS_VERSION})", path=source, hint="upgrade fleet")

    subnets_raw = r.get(data, "subnets", dict, "")
    if not subnets_raw:
        raise r.fail("subnets", "has no subnets (need at least one AZ → subnet id)")
    subnets = {str(az): r.get(subnets_raw, az, str, "subnets") for az in subnets_raw}

    profile_raw = r.get(data, "instance_profile", dict, "")
    profile = InstanceProfile(arn=r.get(profile_raw, "arn", str, "instance_profile"),
                              name=r.get(profile_raw, "name", str, "instance_profile"))

    templates_raw = r.get(data, "templates", dict, "")
    templates: dict[str, TemplateOutputs] = {}
    for name, raw in templates_raw.items():
        where = f"templates.{name}"
        if not isinstance(raw, Mapping):
            raise r.fail(where, f"expected an object, got {type(raw).__name__}")
        types = r.get(raw, "instance_types", list, where)
        if not types or not all(isinstance(t, str) and t for t in types):
            raise r.fail(f"{where}.instance_types", "must be a non-empty list of instance type names")
        gpus = r.get(raw, "gpus_per_machine", int, where)
        if gpus < 1:
            raise r.fail(f"{where}.gpus_per_machine", f"must be at least 1, got {gpus}")
        disk = r.get(raw, "disk_gb", int, where, required=False)
        templates[str(name)] = TemplateOutputs(
            name=str(name),
            launch_template_id=r.get(raw, "launch_template_id", str, where),
            instance_types=tuple(types),
            gpus_per_machine=gpus,
            gpu_model=r.get(raw, "gpu_model", str, where, required=False) or "",
            spot=bool(r.get(raw, "spot", bool, where, required=False)),
            image_id=r.get(raw, "image_id", str, where, required=False),
            recipe=r.get(raw, "recipe", str, where, required=False),
            disk_gb=disk,
        )

    reaper_raw = r.get(data, "reaper", dict, "", required=False) or {}
    reaper = ReaperOutputs(function_name=r.get(reaper_raw, "function_name", str, "reaper", False),
                           function_arn=r.get(reaper_raw, "function_arn", str, "reaper", False),
                           schedule=r.get(reaper_raw, "schedule", str, "reaper", False),
                           max_lease_hours=r.get(reaper_raw, "max_lease_hours", int, "reaper", False))
    return StackOutputs(
        version=version,
        region=r.get(data, "region", str, ""),
        vpc_id=r.get(data, "vpc_id", str, ""),
        subnets=subnets,
        security_group_id=r.get(data, "security_group_id", str, ""),
        instance_profile=profile,
        snapshot_bucket=r.get(data, "snapshot_bucket", str, ""),
        templates=templates,
        reaper=reaper,
        project=r.get(data, "project", str, "", required=False),
        stack=r.get(data, "stack", str, "", required=False),
        controller_policy_arn=r.get(data, "controller_policy_arn", str, "", required=False),
        source=source,
    )


def load_outputs(source: str | Path | Mapping[str, Any]) -> StackOutputs:
    """Read stack outputs from a `pulumi stack output --json` file, or from an already-parsed dict."""
    if isinstance(source, Mapping):
        return parse_outputs(source)
    from ...regular_files import read_config_file
    path = Path(source).expanduser()
    try:
        raw = read_config_file(path)      # a FIFO or /dev/zero named here: one line, not a hang
    except FileNotFoundError:
        raise NotFound(f"stack outputs file {path} does not exist",
                       hint="run `pulumi stack output --json > FILE` in the stack and point "
                            "FLEET_AWS_OUTPUTS (or [aws] outputs in fleet.toml) at it") from None
    except OSError as exc:
        raise EnvironmentProblem(f"cannot read stack outputs {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except ValueError as exc:     # UnicodeDecodeError too
        raise ConfigError(f"not JSON: {exc}", path=str(path), hint=REFRESH_HINT) from None
    return parse_outputs(data, source=str(path))


def load_outputs_from_stack(stack: str, work_dir: str | Path = ".") -> StackOutputs:
    """Read outputs straight from a Pulumi stack through the Automation API (needs the pulumi CLI)."""
    if shutil.which("pulumi") is None:
        raise EnvironmentProblem("the pulumi CLI is not installed, so stack outputs cannot be read "
                                 f"from stack {stack!r}",
                                 hint="install it (https://www.pulumi.com/docs/install/) or save "
                                      "`pulumi stack output --json` to a file and set FLEET_AWS_OUTPUTS")
    from .stack_backend import check_stack_backend
    check_stack_backend(work_dir)
    from pulumi import automation as auto   # lazy: pulumi is an optional extra

    try:
        st = auto.select_stack(stack_name=stack, work_dir=str(work_dir))
        outputs = st.outputs()
    except Exception as exc:   # the Automation API raises many types; keep it to one line
        raise EnvironmentProblem(f"cannot read outputs of Pulumi stack {stack!r}: "
                                 f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}",
                                 hint="check `pulumi stack ls` in " + str(work_dir)) from None
    data = {key: out.value for key, out in outputs.items()}
    return parse_outputs(data, source=f"pulumi stack {stack}")


def resolve_outputs(aws_config: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None,
                    ) -> StackOutputs:
    """Find the outputs the way users configure them: $FLEET_AWS_OUTPUTS, then `[aws] outputs = FILE`,
    then `[aws] stack = NAME` through the Automation API."""
    import os
    env = os.environ if env is None else env
    aws_config = aws_config or {}
    if env.get("FLEET_AWS_OUTPUTS"):
        return load_outputs(env["FLEET_AWS_OUTPUTS"])
    if aws_config.get("outputs"):
        return load_outputs(aws_config["outputs"])
    if aws_config.get("stack"):
        return load_outputs_from_stack(str(aws_config["stack"]), aws_config.get("stack_dir") or ".")
    raise ConfigError("no stack outputs configured for the aws provider",
                      hint="set FLEET_AWS_OUTPUTS=FILE (from `pulumi stack output --json`) or "
                           "`[aws] outputs = \"FILE\"` in fleet.toml")
