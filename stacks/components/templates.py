"""Templates: one EC2 launch template per machine template in the stack config.

Each one launches the *baked* image of its recipe, found by the `fleet:recipe-hash` tag that
`fleet image bake` puts on it (so a template never boots an unbaked base image and a recipe change
means a new image), with an encrypted gp3 root volume, IMDSv2 required, shutdown = terminate, tags
on the instance and its volumes, and boot user-data that starts the fleet agent's watchdog.

The AWS provider passes its own user-data per lease (the lease's SSH key, deadline, heartbeat TTL),
which replaces the template's; the template's user-data is the safety net for a machine launched
straight from the template (console, script, mistake): it still ends itself at `bootDeadlineHours`.
Spot vs on-demand is *not* baked in: it is exported, and the provider asks for spot per launch so it
can fall back to on-demand.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from .common import TYPE_PREFIX, child

AGENT_PATH = "/opt/fleet/agent.py"      # where the recipes' 40-agent.sh installs the agent
AGENT_STATE = "/var/lib/fleet/boot"


@dataclass(frozen=True)
class TemplateSpec:
    name: str
    instance_types: tuple[str, ...]
    gpus_per_machine: int
    spot: bool
    disk_gb: int
    recipe: str
    recipe_hash: str
    gpu_model: str = ""


@dataclass(frozen=True)
class TemplatesArgs:
    stack: str
    templates: tuple[TemplateSpec, ...]
    security_group_id: pulumi.Input[str]
    instance_profile_arn: pulumi.Input[str]
    boot_deadline_s: int
    heartbeat_ttl_s: int
    tags: dict[str, str]


def boot_user_data(boot_deadline_s: int, heartbeat_ttl_s: int) -> str:
    """The template's user-data: start the watchdog with a hard maximum, powering off at expiry."""
    return f"""#!/bin/bash
# fleet: start the on-machine watchdog. Shutdown behaviour is terminate, so powering off at the
# deadline ends the machine and its bill even if nobody ever connects to it.
set -u
token=$(curl -sf -X PUT http://169.254.169.254/latest/api/token \\
  -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' || true)
id=$(curl -sf -H "X-aws-ec2-metadata-token: $token" \\
  http://169.254.169.254/latest/meta-data/instance-id || hostname)
mkdir -p {AGENT_STATE}
if [ -f {AGENT_PATH} ]; then
  nohup python3 {AGENT_PATH} watchdog --state-dir {AGENT_STATE} --machine-id "$id" \\
    --ttl {heartbeat_ttl_s} --max {boot_deadline_s} --poweroff --telemetry-interval 10 \\
    >>/var/log/fleet-agent.log 2>&1 &
else
  # No agent means this is not a fleet image: do not let it run unbounded.
  echo "fleet agent missing; powering off in {boot_deadline_s // 60} minutes" >>/var/log/fleet-agent.log
  shutdown -P +{max(1, boot_deadline_s // 60)}
fi
"""


class Templates(pulumi.ComponentResource):
    launch_templates: dict[str, aws.ec2.LaunchTemplate]
    images: dict[str, aws.ec2.GetAmiResult]

    def __init__(self, name: str, args: TemplatesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TYPE_PREFIX}:Templates", name, None, opts)
        self.images = {}
        self.launch_templates = {}
        user_data = base64.b64encode(
            boot_user_data(args.boot_deadline_s, args.heartbeat_ttl_s).encode()).decode()
        for spec in args.templates:
            image = self._image(spec.recipe, spec.recipe_hash)
            extra = {"fleet:template": spec.name, "fleet:recipe": spec.recipe,
                     "fleet:recipe-hash": spec.recipe_hash}
            machine_tags = {**args.tags, **extra}
            self.launch_templates[spec.name] = aws.ec2.LaunchTemplate(
                f"{name}-{spec.name}",
                name_prefix=f"fleet-{args.stack}-{spec.name}-",
                description=f"fleet {spec.name}: {spec.gpus_per_machine} GPU(s), recipe {spec.recipe}",
                image_id=image.id,
                instance_type=spec.instance_types[0],
                iam_instance_profile={"arn": args.instance_profile_arn},
                vpc_security_group_ids=[args.security_group_id],
                instance_initiated_shutdown_behavior="terminate",
                metadata_options={"http_endpoint": "enabled", "http_tokens": "required",
                                  # 2 hops: containers on the machine can still reach IMDS.
                                  "http_put_response_hop_limit": 2,
                                  "instance_metadata_tags": "enabled"},
                block_device_mappings=[{
                    "device_name": image.root_device_name or "/dev/sda1",
                    "ebs": {"volume_size": spec.disk_gb, "volume_type": "gp3", "encrypted": "true",
                            "delete_on_termination": "true"},
                }],
                user_data=user_data,
                update_default_version=True,
                tag_specifications=[{"resource_type": kind, "tags": machine_tags}
                                    for kind in ("instance", "volume", "network-interface")],
                tags=machine_tags,
                opts=child(self))
        self.register_outputs({"launch_template_ids": {
            n: lt.id for n, lt in self.launch_templates.items()}})

    def _image(self, recipe: str, recipe_hash: str) -> aws.ec2.GetAmiResult:
        """The newest image of ours tagged with this recipe hash; one lookup per recipe."""
        if recipe_hash not in self.images:
            try:
                self.images[recipe_hash] = aws.ec2.get_ami(
                    owners=["self"], most_recent=True,
                    filters=[{"name": "tag:fleet:recipe-hash", "values": [recipe_hash]},
                             {"name": "state", "values": ["available"]}])
            except Exception as exc:   # the invoke's own error is a page of provider text
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise pulumi.RunError(
                    f"no baked image for recipe {recipe!r} (fleet:recipe-hash {recipe_hash[:12]}…): "
                    f"run `fleet image bake {recipe}` first ({first[:160]})") from None
        return self.images[recipe_hash]
