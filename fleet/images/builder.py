"""The image builder: one EC2 instance launched from a recipe's base image, reachable over SSH with a
key made for this bake and a host key we made (so it is pinned, never learnt), and ended always.

The builder boots with the AWS provider's own bootstrap (fleet/providers/aws/userdata.py): our host
key, a `fleet` user with this bake's key, and the agent's watchdog with a hard maximum, so even a
builder whose controller died powers itself off (shutdown behaviour: terminate). The one addition
for baking is passwordless sudo for that user, which fleet's own cleanup removes after the recipe's
steps, whatever they are, and the bake checks is gone before the image is taken (finish.py). It
also carries fleet:lease / fleet:expires-at tags, so the reaper ends it too.

In the AWS sandbox (moto), nothing boots: the sandbox binds the instance to a loopback sshd that
takes the same keys, exactly as for leased machines.
"""
from __future__ import annotations

import fnmatch
import socket
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

from ..errors import InfrastructureError, NotFound
from ..models import Machine, utcnow
from .recipe import BaseImage, Recipe

BAKE_SUDOERS = "/etc/sudoers.d/90-fleet-bake"


@dataclass
class Builder:
    instance_id: str
    lease_id: str
    machine: Machine | None = None
    temp_security_group: str | None = None
    sandbox: Any = None
    notes: list[str] = field(default_factory=list)


def base_image(ec2, recipe: Recipe) -> tuple[dict[str, Any], bool]:
    """(image, pinned): the image [base.ami] pins for this region, which must still match the [base]
    filter (owner, name pattern, architecture), else the newest public image matching the filter."""
    base = recipe.base
    filters = [{"Name": "name", "Values": [base.name]},
               {"Name": "architecture", "Values": [base.architecture]},
               {"Name": "state", "Values": ["available"]}]
    region = ec2.meta.region_name
    pinned = base.ami.get(region)
    where = f"images/{recipe.name}/recipe.toml"
    if pinned:
        try:
            images = ec2.describe_images(ImageIds=[pinned]).get("Images", [])
        except Exception as exc:  # noqa: BLE001 — an unknown id is an error, not a traceback
            if "InvalidAMIID" not in str(exc):
                raise
            images = []
        images = [i for i in images if _matches(i, base)]
        if not images:
            raise NotFound(f"base image {pinned} ([base.ami] {region}) is not an available "
                           f"{base.architecture} image named like {base.name!r} from {', '.join(base.owners)}",
                           hint=f"check [base] in {where}")
        return images[0], True
    images = ec2.describe_images(Owners=list(base.owners), Filters=filters).get("Images", [])
    if not images:
        raise NotFound(f"no base image matches {base.name!r} from {', '.join(base.owners)} "
                       f"in this region", hint=f"check [base] in {where}")
    return max(images, key=lambda i: i.get("CreationDate", "")), False


def _matches(image: dict[str, Any], base: BaseImage) -> bool:
    """Checked here rather than left to DescribeImages' filters, which do not all apply to ImageIds."""
    owner_ok = image.get("OwnerId") in base.owners or image.get("ImageOwnerAlias") in base.owners
    return (owner_ok and fnmatch.fnmatchcase(image.get("Name", ""), base.name)
            and image.get("Architecture") == base.architecture and image.get("State") == "available")


def user_data(lease_id: str, authorized_key: str, host_private: str, host_public: str,
              max_s: int) -> str:
    from ..providers.aws.userdata import MACHINE_USER, BootSpec, render
    from ..remote.agent import agent_source
    script = render(BootSpec(lease_id=lease_id, authorized_key=authorized_key,
                             host_private_key=host_private, host_public_key=host_public,
                             deadline_s=max_s, max_duration_s=max_s, agent_source=agent_source()))
    return script + (f"echo '{MACHINE_USER} ALL=(ALL) NOPASSWD:ALL' > {BAKE_SUDOERS}\n"
                     f"chmod 440 {BAKE_SUDOERS}\n")


def launch(ec2, recipe: Recipe, base: dict[str, Any], *, lease_id: str, keys_dir: Path, max_s: int,
           subnet_id: str | None, security_group_id: str | None,
           stack: str | None = None) -> tuple[Builder, dict[str, str]]:
    """Start the builder (one RunInstances call, idempotent on the bake id)."""
    from ..keys import generate_ed25519
    from ..providers.aws.launch import tag_list
    client_pub = generate_ed25519(keys_dir / "id_ed25519", comment=f"fleet-bake-{lease_id}")
    host_pub = generate_ed25519(keys_dir / "host_ed25519", comment=f"fleet-bake-host-{lease_id}")
    expires = (utcnow() + timedelta(seconds=max_s)).replace(microsecond=0)
    tags = {"Name": f"fleet-bake-{recipe.name}", "fleet:lease": lease_id,
            "fleet:expires-at": expires.isoformat().replace("+00:00", "Z"),
            "fleet:role": "image-builder", "fleet:recipe": recipe.name,
            "fleet:recipe-hash": recipe.content_hash, "managed-by": "fleet",
            **({"fleet:stack": stack} if stack else {})}
    params: dict[str, Any] = {
        "ImageId": base["ImageId"], "InstanceType": recipe.builder_instance_type,
        "MinCount": 1, "MaxCount": 1, "ClientToken": lease_id,
        "UserData": user_data(lease_id, client_pub, (keys_dir / "host_ed25519").read_text(), host_pub,
                              max_s),
        "InstanceInitiatedShutdownBehavior": "terminate",
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
        "BlockDeviceMappings": [{"DeviceName": base.get("RootDeviceName") or "/dev/sda1", "Ebs": {
            "VolumeSize": recipe.builder_disk_gb, "VolumeType": "gp3", "Encrypted": True,
            "DeleteOnTermination": True}}],
        "TagSpecifications": [{"ResourceType": kind, "Tags": tag_list(tags)}
                              for kind in ("instance", "volume")],
    }
    if subnet_id:
        params["SubnetId"] = subnet_id
    if security_group_id:
        params["SecurityGroupIds"] = [security_group_id]
    instance = ec2.run_instances(**params)["Instances"][0]
    return Builder(instance_id=instance["InstanceId"], lease_id=lease_id), {
        "client_pub": client_pub, "host_pub": host_pub, "base_image": base["ImageId"]}


def temporary_security_group(ec2, lease_id: str, ssh_cidr: str) -> str:
    """For a bake with no stack: a group in the default VPC letting `ssh_cidr` reach port 22."""
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}]).get("Vpcs", [])
    if not vpcs:
        raise NotFound("no default VPC for the builder", hint="pass --subnet and --security-group, or "
                                                              "configure stack outputs (FLEET_AWS_OUTPUTS)")
    sg = ec2.create_security_group(GroupName=f"fleet-bake-{lease_id}", VpcId=vpcs[0]["VpcId"],
                                   Description="fleet image builder: SSH for one bake",
                                   TagSpecifications=[{"ResourceType": "security-group", "Tags": [
                                       {"Key": "fleet:lease", "Value": lease_id},
                                       {"Key": "managed-by", "Value": "fleet"}]}])["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": ssh_cidr}]}])
    return sg


def reach(ec2, builder: Builder, keys_dir: Path, host_pub: str, *, sandbox: Any, max_s: int,
          timeout_s: float, sleep: Callable[[float], None] = time.sleep) -> Machine:
    """Wait until the builder runs and describe how to SSH to it (the sandbox binds it to loopback)."""
    waiter = ec2.get_waiter("instance_running")
    waiter.wait(InstanceIds=[builder.instance_id],
                WaiterConfig={"Delay": 1 if sandbox else 10, "MaxAttempts": int(timeout_s // (1 if sandbox else 10)) + 1})
    inst = ec2.describe_instances(InstanceIds=[builder.instance_id])["Reservations"][0]["Instances"][0]
    common = dict(id=builder.instance_id, lease_id=builder.lease_id, node_rank=0,
                  key_path=str(keys_dir / "id_ed25519"), host_key=host_pub,
                  instance_type=inst.get("InstanceType", ""),
                  provider_ref={"instance_id": builder.instance_id})
    if sandbox:
        b = sandbox.bind(builder.instance_id, builder.lease_id, keys_dir / "id_ed25519",
                         keys_dir / "host_ed25519", host_pub, deadline_s=max_s, max_s=max_s,
                         private_ip=inst.get("PrivateIpAddress"))
        builder.sandbox = sandbox
        return Machine(host=b["host"], port=int(b["port"]), user=b["user"], workdir=b["workdir"],
                       python=b.get("python", "python3"), **common)
    from ..providers.aws.userdata import MACHINE_USER, WORKDIR
    host = inst.get("PublicIpAddress") or inst.get("PrivateIpAddress")
    if not host:
        raise InfrastructureError(f"builder {builder.instance_id} has no IP address")
    _wait_tcp(host, 22, timeout_s, sleep)
    return Machine(host=host, port=22, user=MACHINE_USER, workdir=WORKDIR, **common)


def _wait_tcp(host: str, port: int, timeout_s: float, sleep: Callable[[float], None]) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=5):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise InfrastructureError(f"builder {host}:{port} never answered: {exc}",
                                          hint="is --ssh-cidr / the security group letting you in?") from None
            sleep(5)


def destroy(ec2, builder: Builder, *, wait_s: float = 600) -> list[str]:
    """Terminate the builder and remove what the bake made for it. Never raises: returns problems."""
    problems = []
    if builder.sandbox:
        try:
            builder.sandbox.unbind([builder.instance_id])
        except Exception as exc:  # noqa: BLE001
            problems.append(f"sandbox unbind: {exc}")
    try:
        ec2.terminate_instances(InstanceIds=[builder.instance_id])
    except Exception as exc:  # noqa: BLE001
        if "InvalidInstanceID" not in str(exc):
            problems.append(f"terminate {builder.instance_id}: {exc}")
    if builder.temp_security_group:
        try:   # a group cannot go before its instance has: wait for termination first
            ec2.get_waiter("instance_terminated").wait(
                InstanceIds=[builder.instance_id],
                WaiterConfig={"Delay": 1 if builder.sandbox else 10,
                              "MaxAttempts": max(2, int(wait_s // (1 if builder.sandbox else 10)))})
            ec2.delete_security_group(GroupId=builder.temp_security_group)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"delete security group {builder.temp_security_group}: {exc}")
    return problems
