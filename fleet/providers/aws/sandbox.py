"""The AWS sandbox: the whole AWS path on one laptop, with no account.

Two halves:

* `create_stack(...)` makes, in a moto server, what the Pulumi stack makes in a real account
  (VPC, one subnet per AZ, security group, instance profile, snapshot bucket, one launch template
  per machine template) and returns the same outputs structure the stack exports (outputs.py).
* `Sandbox` — the address map. moto has no machines: the instances it "launches" have fake
  10.x/172.x addresses that must never be connected to. When FLEET_AWS_SANDBOX=1 (or the file
  $FLEET_HOME/aws-sandbox/enabled exists) the provider, once instances are running and before
  anything connects, binds each instance id to a real sshd on 127.0.0.1 started with the lease's
  client key and the lease's host key (the same sshd + watchdog the local provider uses), and the
  Machine gets host 127.0.0.1 and that sshd's port. Bindings live under
  $FLEET_HOME/aws-sandbox/machines/<instance-id>/ (binding.json records instance → port).

* `write_moto_amis(path)` — the images moto serves: its own catalogue plus one stand-in per [base]
  filter of the image recipes (images/*, or $FLEET_IMAGES_DIR), so `fleet image bake RECIPE` finds
  a base image to launch its builder from (moto's catalogue has no Ubuntu 22.04). moto reads the file
  named by MOTO_AMIS_PATH when it loads its EC2 backend: scripts/aws_sandbox.py sets it first.

What the sandbox cannot show: a real boot (user-data is rendered and sent, but moto does not run
it), GPUs (simulated slots, as with the local provider), and power-off → termination (a sandbox
machine's watchdog ends its sshd at the deadline; the moto instance stays until release or reap).
"""
from __future__ import annotations

import getpass
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    import threading

from ...deep_trees import rmtree   # a job's tree may be deeper than shutil.rmtree can go
from ...paths import fleet_home, subdir
from .outputs import OUTPUTS_VERSION

ENV_FLAG = "FLEET_AWS_SANDBOX"
LOGIN_ENV = "FLEET_AWS_SANDBOX_LOGIN"
SUPERVISOR_DIR = ".fleet-supervisor"   # in the machine's directory, beside (not in) its workdir
LEASE_FILE = "lease_id"      # written before anything starts: which lease a (half-made) machine is for

DEFAULT_TEMPLATES: dict[str, dict[str, Any]] = {
    "aws-1gpu": {"instance_types": ["g6.xlarge", "g5.xlarge", "g4dn.xlarge"], "gpus_per_machine": 1,
                 "gpu_model": "L4", "spot": True},
    "aws-4gpu": {"instance_types": ["g6.12xlarge", "g5.12xlarge"], "gpus_per_machine": 4,
                 "gpu_model": "L4", "spot": False},
    "aws-8gpu": {"instance_types": ["p4d.24xlarge", "g6.48xlarge", "g5.48xlarge", "g6.12xlarge"],
                 "gpus_per_machine": 8, "gpu_model": "", "spot": True},
}


def machine_login() -> str | None:
    """The sandbox machines' login when FLEET_AWS_SANDBOX_LOGIN names one: an unprivileged user of
    this computer standing in for an instance's `fleet` user, so that the experiment and node 0's
    supervisor (this process's user) are different users, as on EC2. Needs root (sshd switching
    users). None: the machines log in as this process's user (one user for everything)."""
    import pwd
    from ...errors import EnvironmentProblem
    login = os.environ.get(LOGIN_ENV, "").strip()
    if not login or login == getpass.getuser():
        return None
    if os.geteuid() != 0:
        raise EnvironmentProblem(f"{LOGIN_ENV}={login}: sandbox machines log in as another user only when "
                                 "the sandbox runs as root", hint=f"unset {LOGIN_ENV}")
    try:
        pwd.getpwnam(login)
    except KeyError:
        raise EnvironmentProblem(f"{LOGIN_ENV}={login}: no such user on this computer",
                                 hint=f"create it (useradd --system {login}) or unset {LOGIN_ENV}") from None
    return login


def _login_python() -> str:
    """The machines' python for another login: this process's may live where only its user may
    read (a pyenv under /root); the system's is everyone's, as an instance's python3 is."""
    for candidate in ("/usr/local/bin/python3", "/usr/bin/python3"):
        if os.access(candidate, os.X_OK):
            return candidate
    return sys.executable


def sandbox_enabled(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    if env.get(ENV_FLAG, "").strip() not in ("", "0", "false", "no"):
        return True
    return (fleet_home(create=False) / "aws-sandbox" / "enabled").exists()


class Sandbox:
    """instance id → loopback sshd machine."""

    def __init__(self, root: Path | None = None, python: str | None = None):
        self.root = root or subdir("aws-sandbox") / "machines"
        self.root.mkdir(parents=True, exist_ok=True)
        # Its real path: node 0's supervisor reaches it through a link in its own 0700 directory,
        # and a machine's paths (workdir, authorized_keys) must not lead its login through there.
        self.root = self.root.resolve()
        self.python = python or sys.executable

    def bind(self, instance_id: str, lease_id: str, key_path: Path, host_key_path: Path, host_public_key: str,
             *, deadline_s: int, max_s: int, private_ip: str | None = None) -> dict[str, Any]:
        """Start (or find, for a retried lease) the loopback machine standing in for `instance_id`."""
        from ..local.sshd import start_sshd, start_watchdog, stop_machine_dir
        d = self.root / instance_id
        existing = self._read(d)
        if existing and existing.get("lease_id") == lease_id and _alive(existing.get("sshd_pid")):
            return existing       # a retried lease adopting its instances keeps their machines
        if d.exists():
            stop_machine_dir(d, grace_s=0.2)
            rmtree(d, ignore_errors=True)
        d.mkdir(parents=True, mode=0o700)
        (d / LEASE_FILE).write_text(lease_id)          # `unbind_lease` finds a half-made machine too
        authorized = Path(f"{key_path}.pub").read_text()
        # Watchdog first, then sshd (the watchdog reads sshd.pid at expiry), then the binding: the
        # other way round, a controller killed in between left sshds listening with the lease key
        # authorized and no deadline. No --poweroff: at its deadline the watchdog ends this
        # machine's sshd and processes only.
        login = machine_login()
        if login:   # the login reaches its machine's workdir through these (listing them stays ours)
            for parent in (self.root, self.root.parent, fleet_home(create=False)):
                os.chmod(parent, os.stat(parent).st_mode | 0o111)
        start_watchdog(d, instance_id, ttl_s=deadline_s, max_s=max_s, kill_pids=[],
                       kill_pid_files=[d / "sshd.pid"], python=self.python,
                       agent_dir=d / "agent" if login else None)
        try:
            sshd = start_sshd(d, instance_id, authorized, host_key_path=host_key_path, login=login,
                              also=(getpass.getuser(),))
            if sshd.host_key.split()[:2] != host_public_key.split()[:2]:
                raise RuntimeError(f"sandbox sshd for {instance_id} did not take the lease's host key")
        except BaseException:
            stop_machine_dir(d, grace_s=0.2)
            raise
        binding = {"instance_id": instance_id, "lease_id": lease_id, "private_ip": private_ip,
                   "host": "127.0.0.1", "port": sshd.port, "user": sshd.user, "workdir": str(sshd.root),
                   "python": _login_python() if login else self.python, "sshd_pid": sshd.pid, "dir": str(d), "isolation": sshd.isolation,
                   # node 0's supervisor logs in as this (sandbox) user, into a directory the machine's
                   # login can neither read nor write (EC2: the `fleet-supervisor` user, userdata.py)
                   "supervisor_user": getpass.getuser(), "supervisor_dir": str(d / SUPERVISOR_DIR),
                   "supervisor_python": self.python}
        (d / "binding.json").write_text(json.dumps(binding, indent=1))
        return binding

    def bindings(self) -> list[dict[str, Any]]:
        return [b for d in sorted(self.root.iterdir()) if (b := self._read(d))]

    def address_of(self, instance_id: str) -> tuple[str, int] | None:
        b = self._read(self.root / instance_id)
        return (b["host"], int(b["port"])) if b else None

    def unbind(self, instance_ids: list[str]) -> None:
        from ..local.sshd import stop_machine_dir
        for iid in instance_ids:
            # A machine id read back from the (shared) state: a plain name, never a path. A planted
            # `../../x` had this stop and delete a directory outside the sandbox.
            if not (isinstance(iid, str) and iid and iid[0] != "." and all(c.isalnum() or c in "._-" for c in iid)):
                continue
            d = self.root / iid
            if d.exists():
                stop_machine_dir(d, grace_s=0.5)
                rmtree(d, ignore_errors=True)

    def interrupt(self, instance_id: str, ec2: Any, *, after_s: float = 120.0) -> "threading.Thread":
        """A spot interruption, as AWS does it: the notice in the instance's metadata now (the
        sandbox's stand-in for IMDS: files under <binding>/imds, the paths IMDS serves), then,
        `after_s` later (AWS: two minutes), the instance terminated and its machine gone (its sshd
        and every process of it). Returns the thread that carries out the reclaim."""
        import threading
        from datetime import datetime, timedelta, timezone
        d = self.root / instance_id
        if self._read(d) is None:
            raise KeyError(f"instance {instance_id} is not bound to a sandbox machine")
        when = datetime.now(timezone.utc) + timedelta(seconds=after_s)
        notice = d / "imds" / "latest" / "meta-data" / "spot"
        notice.mkdir(parents=True, exist_ok=True)
        tmp = notice / ".instance-action.tmp"
        tmp.write_text(json.dumps({"action": "terminate", "time": when.strftime("%Y-%m-%dT%H:%M:%SZ")}))
        os.replace(tmp, notice / "instance-action")

        def reclaim() -> None:
            import time
            time.sleep(after_s)
            ec2.terminate_instances(InstanceIds=[instance_id])
            self.unbind([instance_id])

        thread = threading.Thread(target=reclaim, name=f"reclaim-{instance_id}", daemon=True)
        thread.start()
        return thread

    def unbind_lease(self, lease_id: str) -> None:
        self.unbind([d.name for d in sorted(self.root.iterdir()) if _lease_of(d) == lease_id])

    @staticmethod
    def _read(d: Path) -> dict[str, Any] | None:
        try:
            return json.loads((d / "binding.json").read_text())
        except (OSError, ValueError):
            return None


def _lease_of(d: Path) -> str | None:
    binding = Sandbox._read(d)
    if binding:
        return binding.get("lease_id")
    try:
        return (d / LEASE_FILE).read_text().strip() or None
    except OSError:
        return None


def _alive(pid: Any) -> bool:
    from ..local.sshd import pid_alive
    return bool(pid) and pid_alive(int(pid))


def recipe_base_images(root: Path | None = None) -> list[dict[str, Any]]:
    """One moto image (its catalogue's record format) per distinct [base] of the recipes: named as
    the filter would match (each `*` a date), from the filter's first owner, the filter's architecture."""
    import hashlib
    from ...images.recipe import list_recipes, load_recipe
    images: dict[tuple[str, str, str], dict[str, Any]] = {}
    for recipe in list_recipes(root):
        base = load_recipe(recipe, root).base
        key = (base.name, base.owners[0] if base.owners else "self", base.architecture)
        if key in images:
            continue
        name = base.name.replace("*", "20261101").replace("?", "0")
        digest = hashlib.sha256("\0".join(key).encode()).hexdigest()
        images[key] = {
            "ami_id": f"ami-0{digest[:16]}", "state": "available", "public": True, "owner_id": key[1],
            "image_location": f"{key[1]}/{name}", "sriov": "simple", "root_device_type": "ebs",
            "root_device_name": "/dev/sda1", "image_type": "machine", "platform": None,
            "architecture": base.architecture, "name": name, "virtualization_type": "hvm", "hypervisor": "xen",
            "description": f"fleet sandbox stand-in for the base of images/{recipe} ({base.name})"}
    return list(images.values())


def write_moto_amis(path: Path, recipes_root: Path | None = None) -> Path:
    """The file for MOTO_AMIS_PATH: moto's own image catalogue plus the recipes' base images."""
    from moto.utilities.utils import load_resource
    catalogue = load_resource("ec2/resources/amis.json")
    stand_ins = recipe_base_images(recipes_root)
    taken = {a["ami_id"] for a in stand_ins}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([a for a in catalogue if a["ami_id"] not in taken] + stand_ins, indent=1))
    return path


def create_stack(region: str = "us-east-1", templates: Mapping[str, Mapping[str, Any]] | None = None,
                 *, name: str = "sandbox", azs: int = 3, session: Any = None) -> dict[str, Any]:
    """Create the stack's resources with boto3 (against AWS_ENDPOINT_URL: moto) and return the outputs
    structure, as `pulumi stack output --json` would print it: {"fleet": {...}}."""
    from ...boto_sessions import new_session
    session = session or new_session()
    ec2 = session.client("ec2", region_name=region)
    iam = session.client("iam", region_name=region)
    s3 = session.client("s3", region_name=region)
    templates = templates or DEFAULT_TEMPLATES

    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    zones = [z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]][:azs]
    subnets = {}
    for n, az in enumerate(zones):
        subnets[az] = ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.42.{n}.0/24",
                                        AvailabilityZone=az)["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName=f"fleet-{name}-ssh", Description="fleet machines: SSH in",
                                   VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "127.0.0.1/32"}]}])
    role = f"fleet-{name}-machine"
    iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                "Principal": {"Service": "ec2.amazonaws.com"}}]}))
    profile = iam.create_instance_profile(InstanceProfileName=role)["InstanceProfile"]
    iam.add_role_to_instance_profile(InstanceProfileName=role, RoleName=role)
    bucket = f"fleet-{name}-snapshots"
    if region == "us-east-1":
        s3.create_bucket(Bucket=bucket)
    else:
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    image = ec2.describe_images(Owners=["amazon"], MaxResults=5)["Images"][0]["ImageId"]

    out_templates = {}
    for tname, spec in templates.items():
        lt = ec2.create_launch_template(LaunchTemplateName=f"fleet-{name}-{tname}", LaunchTemplateData={
            "ImageId": spec.get("image_id", image),
            "InstanceType": spec["instance_types"][0],
            "IamInstanceProfile": {"Arn": profile["Arn"]},
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 2},
            "InstanceInitiatedShutdownBehavior": "terminate",
            "BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "Ebs": {
                "VolumeSize": int(spec.get("disk_gb", 100)), "VolumeType": "gp3", "Encrypted": True,
                "DeleteOnTermination": True}}],
            "TagSpecifications": [{"ResourceType": "instance", "Tags": [{"Key": "fleet:stack", "Value": name}]}],
        })["LaunchTemplate"]["LaunchTemplateId"]
        out_templates[tname] = {
            "launch_template_id": lt, "instance_types": list(spec["instance_types"]),
            "gpus_per_machine": int(spec["gpus_per_machine"]), "gpu_model": spec.get("gpu_model", ""),
            "spot": bool(spec.get("spot", False)), "image_id": spec.get("image_id", image),
            "recipe": spec.get("recipe", "sandbox"), "disk_gb": int(spec.get("disk_gb", 100))}
    return {"fleet": {
        "version": OUTPUTS_VERSION, "region": region, "project": "fleet", "stack": name, "vpc_id": vpc,
        "subnets": subnets, "security_group_id": sg,
        "instance_profile": {"arn": profile["Arn"], "name": profile["InstanceProfileName"]},
        "snapshot_bucket": bucket, "templates": out_templates,
        "reaper": {"function_name": None, "function_arn": None, "schedule": None},
    }}


def existing_sandbox() -> Sandbox | None:
    """`fleet down` from a shell without FLEET_AWS_SANDBOX still stops the lease's loopback machines."""
    if (fleet_home(create=False) / "aws-sandbox" / "machines").is_dir():
        return Sandbox()
    return None
