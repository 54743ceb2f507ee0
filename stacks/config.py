"""Stack config (`Pulumi.<stack>.yaml`) → a validated StackConfig, before any resource is declared.

`parse_stack_config` is pure (a dict of raw values in, a frozen dataclass out) so every rule is
unit-tested without Pulumi; `load_stack_config` reads the values from `pulumi.Config`. Each problem
is a StackConfigError with one line naming the key, e.g.
``fleet:sshCidrs: 0.0.0.0/0 opens SSH to the whole internet (…)``.
"""
from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from fleet.errors import ConfigError

NAMESPACE = "fleet"        # config keys are `fleet:<key>` (the Pulumi project name)
WORLD_SSH_OPT_IN = "allowWorldSsh"
KNOWN_KEYS = {"project", "sshCidrs", WORLD_SSH_OPT_IN, "vpcCidr", "availabilityZones", "azCount",
              "templates", "bucket", "reaper", "bootDeadlineHours", "heartbeatTtlMinutes"}
_REGION_RE = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d$")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")
_ITYPE_RE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
_RATE_RE = re.compile(r"rate\((\d+) (minute|hour|day)(s?)\)")
_CRON_RE = re.compile(r"cron\(([^()]+)\)")
_RECIPE_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,40}")     # a recipe name, as fleet/images/recipe.py
# What CloudWatch Logs accepts as a log group's retention (anything else fails half-way through up).
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827,
                      2192, 2557, 2922, 3288, 3653)
# A security group holds 60 inbound rules per address family by default; one is the intra-fleet rule.
MAX_SSH_CIDRS = 59
# Families whose GPU model a template may leave out (the AWS provider's catalogue is authoritative).
GPU_MODELS = {"p3": "V100", "p3dn": "V100", "p4d": "A100", "p4de": "A100", "p5": "H100", "p5e": "H200",
              "p5en": "H200", "g4dn": "T4", "g5": "A10G", "g6": "L4", "g6e": "L40S", "g5g": "T4G"}


_STACK_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,41}")   # fits fleet-<stack>-machine + Pulumi's suffix in 64


class StackConfigError(ConfigError):
    """A stack config problem, one line naming the key (exit code 2 through the CLI)."""


@dataclass(frozen=True)
class MachineTemplateConfig:
    name: str
    instance_types: tuple[str, ...]      # allowed types, preferred first
    gpus_per_machine: int
    spot: bool                           # market: spot first (the provider falls back to on-demand)
    disk_gb: int
    image: str                           # recipe name under images/
    gpu_model: str = ""


@dataclass(frozen=True)
class BucketConfig:
    object_lock: bool = False            # audit mode: objects cannot be deleted for lock_days
    object_lock_days: int = 30
    object_lock_mode: str = "GOVERNANCE"  # GOVERNANCE (admins may override) or COMPLIANCE
    noncurrent_days: int = 30            # old versions of any object expire after this many days
    force_destroy: bool = False          # `pulumi destroy` empties the bucket first


@dataclass(frozen=True)
class ReaperConfig:
    schedule: str = "rate(10 minutes)"
    dry_run: bool = False
    log_retention_days: int = 30
    max_lease_hours: int = 168           # the reaper ends any machine this long after launch, tag or not


@dataclass(frozen=True)
class StackConfig:
    project: str                         # fleet:project tag value
    stack: str
    region: str
    ssh_cidrs: tuple[str, ...]
    allow_world_ssh: bool
    vpc_cidr: str
    availability_zones: tuple[str, ...]  # empty: the first az_count available AZs of the region
    az_count: int
    templates: tuple[MachineTemplateConfig, ...]
    bucket: BucketConfig = field(default_factory=BucketConfig)
    reaper: ReaperConfig = field(default_factory=ReaperConfig)
    boot_deadline_s: int = 4 * 3600      # a machine launched straight from a template ends by then
    heartbeat_ttl_s: int = 30 * 60

    def tags(self, **extra: str) -> dict[str, str]:
        """Tags every resource carries, so it can always be found (and reaped) by project and stack."""
        return {"fleet:project": self.project, "fleet:stack": self.stack, "managed-by": "fleet",
                **extra}


def _fail(key: str, problem: str, hint: str | None = None) -> StackConfigError:
    return StackConfigError(problem, key=f"{NAMESPACE}:{key}", hint=hint)


def _structured(raw: Mapping[str, Any], key: str, default: Any) -> Any:
    """Pulumi hands structured config values over as JSON text; tests may pass objects."""
    value = raw.get(key)
    if value is None:
        return default
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError as exc:
            raise _fail(key, f"is not valid JSON/YAML structure: {exc}") from None
    return value


def _bool(raw: Mapping[str, Any], key: str, default: bool) -> bool:
    value = raw.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise _fail(key, f"must be true or false, got {value!r}")


def _int(table: Mapping[str, Any], key: str, default: int, where: str, lo: int, hi: int) -> int:
    value = table.get(key, default)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _fail(where + key, f"must be a whole number from {lo} to {hi}, got {value!r}")
    return value


# Without the opt-in, a public block may be at most this wide: 0.0.0.0/0 split into halves (or
# quarters) opens SSH to the world just the same.
_WIDEST_PUBLIC = {4: 8, 6: 32}
_PRIVATE_BLOCKS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "100.64.0.0/10",
    "fc00::/7", "fe80::/10", "::1/128"))
_V4_MAPPED = ipaddress.ip_network("::ffff:0:0/96")


def _wide_public(net) -> bool:
    """Wider than the limit and not inside a private or loopback range (ipaddress's own is_private
    calls 0.0.0.0/1 private: its first and last addresses are)."""
    if net.version == 6 and net.subnet_of(_V4_MAPPED):     # ::ffff:0:0/96 is IPv4's whole space
        return net.prefixlen - 96 < _WIDEST_PUBLIC[4]
    return net.prefixlen < _WIDEST_PUBLIC[net.version] and not any(
        net.version == p.version and net.subnet_of(p) for p in _PRIVATE_BLOCKS)


def _ssh_cidrs(raw: Mapping[str, Any]) -> tuple[tuple[str, ...], bool]:
    cidrs = _structured(raw, "sshCidrs", None)
    if cidrs is None:
        raise _fail("sshCidrs", "is required: the addresses allowed to SSH to machines",
                    hint="e.g. `pulumi config set --path 'fleet:sshCidrs[0]' 203.0.113.7/32`")
    if isinstance(cidrs, str):
        cidrs = [cidrs]
    if not isinstance(cidrs, list) or not cidrs:
        raise _fail("sshCidrs", "must be a non-empty list of CIDRs")
    world_ok = _bool(raw, WORLD_SSH_OPT_IN, False)
    out = []
    for c in cidrs:
        try:
            net = ipaddress.ip_network(str(c).strip(), strict=True)
        except ValueError as exc:
            raise _fail("sshCidrs", f"{c!r} is not a CIDR: {exc}") from None
        if not world_ok and (net.prefixlen == 0 or _wide_public(net)):
            what = "the whole internet" if net.prefixlen == 0 else \
                f"a public block wider than /{_WIDEST_PUBLIC[net.version]}"
            raise _fail("sshCidrs", f"{net} opens SSH to {what}",
                        hint=f"list your own addresses, or set fleet:{WORLD_SSH_OPT_IN}: true "
                             "if you really mean it")
        out.append(str(net))
    out = list(dict.fromkeys(out))
    if len(out) > MAX_SSH_CIDRS:
        raise _fail("sshCidrs", f"lists {len(out)} CIDRs; a security group takes at most {MAX_SSH_CIDRS}",
                    hint="merge neighbouring addresses into wider blocks")
    return tuple(out), world_ok


def _schedule_problem(schedule: str) -> str | None:
    """Why EventBridge would refuse this schedule (at `pulumi up`, half-way), or None."""
    rate, cron = _RATE_RE.fullmatch(schedule), _CRON_RE.fullmatch(schedule)
    if rate:
        n, unit, plural = int(rate.group(1)), rate.group(2), rate.group(3)
        if n < 1:
            return f"{schedule!r}: a rate must be at least 1"
        if (n == 1) == bool(plural):
            return f"{schedule!r}: say rate({n} {unit if n == 1 else unit + 's'})"
        return None
    if cron:
        if len(cron.group(1).split()) != 6:
            return f"{schedule!r}: a cron expression has 6 fields (minutes hours day month weekday year)"
        return None
    return f"{schedule!r} is not an EventBridge schedule"


def _template(i: int, t: Any, recipe_exists) -> MachineTemplateConfig:
    where = f"templates[{i}]."
    if not isinstance(t, Mapping):
        raise _fail(f"templates[{i}]", "each template must be an object")
    unknown = set(t) - {"name", "instanceTypes", "gpusPerMachine", "market", "diskGb", "image",
                        "gpuModel"}
    if unknown:
        raise _fail(where + sorted(unknown)[0], "unknown template key",
                    hint="keys: name, instanceTypes, gpusPerMachine, market, diskGb, image, gpuModel")
    name = t.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise _fail(where + "name", f"must be lowercase letters, digits and dashes, got {name!r}")
    types = t.get("instanceTypes")
    if isinstance(types, str):
        types = [types]
    if not isinstance(types, list) or not types or not all(
            isinstance(x, str) and _ITYPE_RE.match(x) for x in types):
        raise _fail(where + "instanceTypes", f"must be a list of instance types like p4d.24xlarge, "
                                             f"got {types!r}")
    market = t.get("market", "on-demand")
    if market not in ("spot", "on-demand"):
        raise _fail(where + "market", f"must be spot or on-demand, got {market!r}")
    image = t.get("image")
    if not isinstance(image, str) or not image:
        raise _fail(where + "image", "is required: the image recipe (a directory under images/)")
    if not _RECIPE_RE.fullmatch(image):
        raise _fail(where + "image", f"{image!r} is not a recipe name (lowercase letters, digits and "
                                     "dashes: a directory under images/, not a path)")
    if not recipe_exists(image):
        raise _fail(where + "image", f"no recipe {image!r} under images/",
                    hint="add images/<recipe>/recipe.toml, then `fleet image bake <recipe>`")
    family = types[0].split(".")[0]
    return MachineTemplateConfig(
        name=name, instance_types=tuple(types),
        gpus_per_machine=_int(t, "gpusPerMachine", -1, where, 1, 16) if "gpusPerMachine" in t
        else _need_gpus(where),
        spot=market == "spot",
        disk_gb=_int(t, "diskGb", 100, where, 8, 16384),
        image=image,
        gpu_model=str(t.get("gpuModel") or GPU_MODELS.get(family, "")),
    )


def _need_gpus(where: str) -> int:
    raise _fail(where + "gpusPerMachine", "is required (GPUs on one machine of this template)")


def _default_recipe_exists(name: str) -> bool:
    from fleet.images.recipe import RECIPE_FILE, images_root
    return (images_root() / name / RECIPE_FILE).is_file()


def parse_stack_config(raw: Mapping[str, Any], *, project: str, stack: str, region: str | None,
                       recipe_exists=_default_recipe_exists) -> StackConfig:
    """Validate raw `fleet:*` values (keys without the namespace) plus the `aws:region`."""
    if not _STACK_RE.fullmatch(stack):
        # The name goes into resource names AWS checks only at `pulumi up`, half-way: the S3 bucket
        # prefix refuses `_`, the Lambda's name `.`, an IAM role's name past 64 characters.
        raise StackConfigError(f"{stack!r} must be 1-42 letters, digits and hyphens, not starting with a hyphen "
                               "(it names the stack's bucket, Lambda, roles and IAM policy)", key="stack")
    unknown = set(raw) - KNOWN_KEYS
    if unknown:
        raise _fail(sorted(unknown)[0], "unknown stack config key",
                    hint="known keys: " + ", ".join(sorted(KNOWN_KEYS)))
    if not region:
        raise StackConfigError("is required", key="aws:region",
                               hint="`pulumi config set aws:region us-east-1`")
    if not _REGION_RE.match(region):
        raise StackConfigError(f"{region!r} is not an AWS region name like us-east-1", key="aws:region")
    cidrs, world_ok = _ssh_cidrs(raw)

    vpc_cidr = str(raw.get("vpcCidr", "10.42.0.0/16"))
    try:
        vpc_net = ipaddress.ip_network(vpc_cidr, strict=True)
    except ValueError as exc:
        raise _fail("vpcCidr", f"{vpc_cidr!r} is not a CIDR: {exc}") from None
    if vpc_net.version != 4 or not 16 <= vpc_net.prefixlen <= 24 or not vpc_net.is_private:
        raise _fail("vpcCidr", f"{vpc_cidr} must be a private IPv4 block from /16 to /24")

    azs = _structured(raw, "availabilityZones", [])
    if isinstance(azs, str):
        azs = [azs]
    if not isinstance(azs, list) or not all(isinstance(a, str) and re.fullmatch(re.escape(region) + "[a-z]", a)
                                            for a in azs):
        raise _fail("availabilityZones", f"must be a list of zones in {region} (like {region}a), "
                                         f"got {azs!r}")
    if len(set(azs)) != len(azs):
        raise _fail("availabilityZones", f"lists {sorted(a for a in set(azs) if azs.count(a) > 1)[0]} twice")
    az_count = len(azs) if azs else _int(raw, "azCount", 3, "", 1, 6)
    if az_count > 2 ** (24 - vpc_net.prefixlen + 4) // 16 or az_count > 16:
        raise _fail("vpcCidr", f"{vpc_cidr} is too small for {az_count} subnets")

    templates_raw = _structured(raw, "templates", None)
    if not isinstance(templates_raw, list) or not templates_raw:
        raise _fail("templates", "needs at least one machine template",
                    hint="see Pulumi.dev.yaml.example")
    templates = tuple(_template(i, t, recipe_exists) for i, t in enumerate(templates_raw))
    names = [t.name for t in templates]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise _fail("templates", f"template name {dupes[0]!r} is used twice")

    b = _structured(raw, "bucket", {}) or {}
    if not isinstance(b, Mapping):
        raise _fail("bucket", "must be an object")
    lock_mode = b.get("objectLockMode", "GOVERNANCE")
    if lock_mode not in ("GOVERNANCE", "COMPLIANCE"):
        raise _fail("bucket.objectLockMode", f"must be GOVERNANCE or COMPLIANCE, got {lock_mode!r}")
    object_lock = _bool(b, "objectLock", False) if "objectLock" in b else False
    defaults = BucketConfig()
    for key, value, default in (("objectLockDays", b.get("objectLockDays"), defaults.object_lock_days),
                                ("objectLockMode", lock_mode, defaults.object_lock_mode)):
        # A retention asked for without the lock would be silently ignored: no lock at all.
        if not object_lock and value is not None and str(value) != str(default):
            raise _fail(f"bucket.{key}", "is set but fleet:bucket.objectLock is not true: the bucket "
                                         "would have no lock at all",
                        hint="set objectLock: true (only when the bucket is created), or drop the key")
    bucket = BucketConfig(
        object_lock=object_lock,
        object_lock_days=_int(b, "objectLockDays", 30, "bucket.", 1, 36500),
        object_lock_mode=lock_mode,
        noncurrent_days=_int(b, "noncurrentDays", 30, "bucket.", 1, 36500),
        force_destroy=_bool(b, "forceDestroy", False) if "forceDestroy" in b else False,
    )
    r = _structured(raw, "reaper", {}) or {}
    if not isinstance(r, Mapping):
        raise _fail("reaper", "must be an object")
    schedule = str(r.get("schedule", "rate(10 minutes)"))
    problem = _schedule_problem(schedule)
    if problem:
        raise _fail("reaper.schedule", problem, hint="e.g. rate(10 minutes) or cron(0/15 * * * ? *)")
    retention = _int(r, "logRetentionDays", 30, "reaper.", 1, 3653)
    if retention not in LOG_RETENTION_DAYS:
        raise _fail("reaper.logRetentionDays", f"{retention} is not a retention CloudWatch Logs offers",
                    hint="one of " + ", ".join(map(str, LOG_RETENTION_DAYS)))
    reaper = ReaperConfig(schedule=schedule,
                          dry_run=_bool(r, "dryRun", False) if "dryRun" in r else False,
                          log_retention_days=retention,
                          max_lease_hours=_int(r, "maxLeaseHours", 168, "reaper.", 1, 366 * 24))
    tag_project = str(raw.get("project") or project)
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$", tag_project):
        raise _fail("project", f"{tag_project!r} is not a usable tag value")
    return StackConfig(
        project=tag_project, stack=stack, region=region, ssh_cidrs=cidrs, allow_world_ssh=world_ok,
        vpc_cidr=str(vpc_net), availability_zones=tuple(azs), az_count=az_count,
        templates=templates, bucket=bucket, reaper=reaper,
        boot_deadline_s=_int(raw, "bootDeadlineHours", 4, "", 1, 24 * 14) * 3600,
        heartbeat_ttl_s=_int(raw, "heartbeatTtlMinutes", 30, "", 1, 24 * 60) * 60,
    )


def load_stack_config() -> StackConfig:
    """Read `fleet:*` and `aws:region` through pulumi.Config (inside a Pulumi program only)."""
    import pulumi

    cfg = pulumi.Config(NAMESPACE)
    raw: dict[str, Any] = {}
    # pulumi.Config has no "all keys" call: look at every key set for the program (explicit config
    # and the PULUMI_CONFIG bag) so a misspelt key is an error rather than silently ignored.
    from pulumi.runtime import config as runtime_config
    prefix = f"{NAMESPACE}:"
    all_keys = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    for full_key in all_keys:
        if full_key.startswith(prefix):
            key = full_key[len(prefix):]
            key = key[len("config:"):] if key.startswith("config:") else key   # old "ns:config:k"
            raw[key] = cfg.get(key)
    region = pulumi.Config("aws").get("region")
    return parse_stack_config(raw, project=pulumi.get_project(), stack=pulumi.get_stack(),
                              region=region)


def package_root() -> Path:
    """The directory holding the `fleet` package this program runs with: the repository root in a
    checkout, site-packages when fleet is installed (this program then is `fleet.stacks`). The reaper
    Lambda ships that fleet's providers/aws/reap.py, the code `fleet reap` runs."""
    import fleet
    return Path(fleet.__file__).resolve().parent.parent
