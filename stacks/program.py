"""Composes the components from a validated StackConfig and builds the `fleet` output.

The output is the one contract with the CLI: `fleet.providers.aws.outputs` reads it (version
OUTPUTS_VERSION). `__main__.py` only loads the config, calls `build` and exports the result.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from fleet.providers.aws.outputs import OUTPUTS_VERSION

from .components.access import Access, AccessArgs
from .components.controller import Controller, ControllerArgs
from .components.guard import Guard, GuardArgs
from .components.identity import Identity, IdentityArgs
from .components.network import Network, NetworkArgs
from .components.storage import Storage, StorageArgs
from .components.templates import TemplateSpec, Templates, TemplatesArgs
from .config import StackConfig, package_root


@dataclass
class FleetStack:
    network: Network
    access: Access
    storage: Storage
    identity: Identity
    templates: Templates
    guard: Guard
    controller: Controller
    outputs: pulumi.Output[dict[str, Any]]


def availability_zones(cfg: StackConfig) -> tuple[str, ...]:
    if cfg.availability_zones:
        return cfg.availability_zones
    found = aws.get_availability_zones(state="available",
                                       filters=[{"name": "opt-in-status",
                                                 "values": ["opt-in-not-required"]}])
    names = sorted(found.names)[: cfg.az_count]
    if not names:
        raise pulumi.RunError(f"no available zones in {cfg.region}")
    return tuple(names)


def recipe_hashes(cfg: StackConfig) -> dict[str, str]:
    """Content hash of each recipe the templates use (the tag its baked image carries)."""
    from fleet.images.recipe import load_recipe
    from fleet.errors import FleetError
    out = {}
    for t in cfg.templates:
        if t.image not in out:
            try:
                out[t.image] = load_recipe(t.image).content_hash
            except FleetError as exc:
                raise pulumi.RunError(f"recipe {t.image!r}: {exc.one_line()}") from None
    return out


def build(cfg: StackConfig) -> FleetStack:
    name = f"fleet-{cfg.stack}"
    tags = cfg.tags()
    network = Network(name, NetworkArgs(region=cfg.region, vpc_cidr=cfg.vpc_cidr,
                                        availability_zones=availability_zones(cfg), tags=tags))
    access = Access(name, AccessArgs(vpc_id=network.vpc.id, ssh_cidrs=cfg.ssh_cidrs, tags=tags))
    b = cfg.bucket
    storage = Storage(name, StorageArgs(
        stack=cfg.stack, object_lock=b.object_lock, object_lock_days=b.object_lock_days,
        object_lock_mode=b.object_lock_mode, noncurrent_days=b.noncurrent_days, force_destroy=b.force_destroy, tags=tags))
    identity = Identity(name, IdentityArgs(region=cfg.region, tags=tags))
    hashes = recipe_hashes(cfg)
    specs = tuple(TemplateSpec(name=t.name, instance_types=t.instance_types,
                               gpus_per_machine=t.gpus_per_machine, spot=t.spot, disk_gb=t.disk_gb,
                               recipe=t.image, recipe_hash=hashes[t.image], gpu_model=t.gpu_model)
                  for t in cfg.templates)
    templates = Templates(name, TemplatesArgs(
        stack=cfg.stack, templates=specs, security_group_id=access.security_group.id,
        instance_profile_arn=identity.instance_profile.arn, boot_deadline_s=cfg.boot_deadline_s,
        heartbeat_ttl_s=cfg.heartbeat_ttl_s, tags=tags))
    guard = Guard(name, GuardArgs(
        stack=cfg.stack, region=cfg.region, schedule=cfg.reaper.schedule,
        dry_run=cfg.reaper.dry_run, log_retention_days=cfg.reaper.log_retention_days,
        max_lease_hours=cfg.reaper.max_lease_hours,
        package_root=package_root(), tags=tags))
    controller = Controller(name, ControllerArgs(stack=cfg.stack, region=cfg.region, bucket_arn=storage.bucket.arn,
                                                 machine_role_arn=identity.role.arn,
                                                 launch_template_ids=[lt.id for lt in templates.launch_templates.values()],
                                                 tags=tags))

    template_outputs = {
        spec.name: {
            "launch_template_id": templates.launch_templates[spec.name].id,
            "instance_types": list(spec.instance_types),
            "gpus_per_machine": spec.gpus_per_machine,
            "gpu_model": spec.gpu_model,
            "spot": spec.spot,
            "image_id": templates.images[spec.recipe_hash].id,
            "recipe": spec.recipe,
            "disk_gb": spec.disk_gb,
        } for spec in specs}
    outputs = pulumi.Output.from_input({
        "version": OUTPUTS_VERSION,
        "region": cfg.region,
        "project": cfg.project,
        "stack": cfg.stack,
        "vpc_id": network.vpc.id,
        "subnets": network.subnet_ids,
        "security_group_id": access.security_group.id,
        "instance_profile": {"arn": identity.instance_profile.arn,
                             "name": identity.instance_profile.name},
        "snapshot_bucket": storage.bucket.id,
        "templates": template_outputs,
        "reaper": {"function_name": guard.function.name, "function_arn": guard.function.arn,
                   "schedule": cfg.reaper.schedule, "max_lease_hours": cfg.reaper.max_lease_hours},
        "controller_policy_arn": controller.policy.arn,
    })
    return FleetStack(network, access, storage, identity, templates, guard, controller, outputs)
