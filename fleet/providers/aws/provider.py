"""AWSProvider: lease GPU instances from a fleet stack's launch templates; describe; release.

Everything it needs about the account comes from the stack outputs (outputs.py). Keys are made
per lease under $FLEET_HOME/leases/<lease>/: the client key (`id_ed25519`) and the machines' host
key (`host_ed25519`, see userdata.py for why fleet makes the host key itself). In sandbox mode
(FLEET_AWS_SANDBOX=1, see sandbox.py) each instance is bound to a loopback sshd before any
connection; fleet never connects to the fake 10.x/172.x addresses moto hands out.
"""
from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor, as_completed, wait
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

from ...errors import EnvironmentProblem, FleetError, InfrastructureError, MachineUnreachable, UsageError
from ...gpus import gpus_text
from ...models import Lease, Machine, Plan, utcnow
from ...parallel import submit_or_thread   # at interpreter shutdown: on plain threads
from ...paths import subdir
from ..base import (BaseProvider, DescribesLeases, HasLeaseMetadata, InterruptionNotices, LeaseWatch, MachineMix,
                    PublishesDeadline, Queueing, ReleasedFromAnywhere, ReleasesMachines, ReportsMachines,
                    SupervisesFromNode0)
from .capacity import launch_waiting
from .catalog import InstanceType
from .expiry import ReaperExpiry, refuse_past_reaper_cap
from .offering import StackOffers
from ...environment.image import LEASE_META_KEY as IMAGE_META
from ...environment.model import ImageRef
from .images import image_exists, lease_image
from .instances import iso_tag, wait_tcp  # noqa: F401  (iso_tag: for the reaper's tests)
from .launch import TAG_LEASE, find_instances, launch, lease_filter, plan_attempts, terminate_lease, wait_for_state
from .lookup import LeaseLookup
from .outputs import StackOutputs, TemplateOutputs, load_outputs, resolve_outputs
from .reap import TAG_DEADLINE
from .session import make_client, translate
from .settings import AWSSettings
from .userdata import MACHINE_USER, SUPERVISOR_DIR, SUPERVISOR_USER, WORKDIR, BootSpec, render

EXPIRY_GRACE_S = 15 * 60      # fleet:expires-at = launch + max_duration + this (the reaper's line)
CREATE_TAGS_CHUNK = 1000      # EC2 takes up to 1000 resource ids per CreateTags


def lease_dir(lease_id: str) -> Path:
    from ...paths import plain_name
    return subdir("leases") / plain_name(lease_id, "lease id")


class AWSProvider(StackOffers, LeaseLookup, BaseProvider, ReportsMachines, HasLeaseMetadata, PublishesDeadline, DescribesLeases,
                  InterruptionNotices, ReleasesMachines, Queueing, SupervisesFromNode0, ReleasedFromAnywhere, ReaperExpiry):
    name = "aws"
    # DescribeInstances of 1,000 instances takes seconds: status shows EC2's answer of the last minute.
    observed_state_ttl_s = 60.0
    settings = AWSSettings
    description = "EC2 GPU instances from the launch templates of a fleet stack"
    max_machines_per_lease = 256   # fleet's own bound per lease (providers/base.py); EC2 quotas apply too

    def __init__(self, config: Any = None, *, outputs: StackOutputs | dict | str | Path | None = None,
                 ec2: Any = None, session: Any = None, sandbox: Any = None,
                 sleep: Callable[[float], None] = time.sleep, ready_timeout_s: float = 600):
        self.config = config
        self.aws: AWSSettings = self.settings_from(config)
        self._outputs = outputs if isinstance(outputs, StackOutputs) or outputs is None else load_outputs(outputs)
        self._ec2, self._session, self._sandbox = ec2, session, sandbox
        self.sleep = sleep
        self.ready_timeout_s = ready_timeout_s
        self._catalog: dict[str, InstanceType] | None = None
        self.pinned_image: str | None = None   # use_image: a rerun's recorded AMI

    # -- wiring ---------------------------------------------------------------------------------
    @property
    def outputs(self) -> StackOutputs:
        if self._outputs is None:
            self._outputs = resolve_outputs(self.aws.outputs_source())
        return self._outputs

    @property
    def ec2(self):
        if self._ec2 is None:
            self._ec2 = make_client(self.outputs.region, session=self._session)
        return self._ec2

    @property
    def sandbox(self):
        if self._sandbox is None:
            from .sandbox import Sandbox, sandbox_enabled
            self._sandbox = Sandbox() if sandbox_enabled() else False
        return self._sandbox or None

    def _ec2_for(self, lease: Lease):
        """describe/release need only the region: `fleet down` works even where the stack outputs
        are not configured (e.g. another directory), from what the lease recorded."""
        if self._ec2 is not None or self._outputs is not None:
            return self.ec2
        try:
            return self.ec2
        except FleetError:
            region = lease.meta.get("region") or next(
                (m.provider_ref.get("region") for m in lease.machines if m.provider_ref.get("region")), None)
            if not region:
                raise
            self._ec2 = make_client(region, session=self._session)
            return self._ec2

    @classmethod
    def from_config(cls, config) -> "AWSProvider":
        return cls(config)

    # -- leasing --------------------------------------------------------------------------------
    def lease_meta(self) -> dict[str, Any]:
        """Recorded with the lease before anything is launched (optional provider method): a
        controller killed mid-launch leaves `fleet down` the region to find the tagged instances in,
        from any directory, without the stack outputs."""
        return {"region": self.outputs.region, "stack": self.outputs.stack}

    def node0_handoff(self):
        """A detached run's supervisor goes to node 0 (fleet/run/node_launch.py, handoff.py)."""
        from .handoff import AWSHandoff
        return AWSHandoff()

    def why_not_released_here(self, lease: Lease) -> str | None:
        return None   # the lease's region is recorded with it; the caller's AWS credentials do the rest

    def _keys(self, lease_id: str) -> tuple[Path, str, Path, str]:
        from ...keys import generate_ed25519
        d = lease_dir(lease_id)
        client, host = d / "id_ed25519", d / "host_ed25519"
        # A retried lease reuses its keys: adopted instances were booted with them.
        client_pub = (" ".join(Path(f"{client}.pub").read_text().split()[:2]) if client.exists()
                      else generate_ed25519(client, comment=f"fleet-lease-{lease_id}"))
        host_pub = (" ".join(Path(f"{host}.pub").read_text().split()[:2]) if host.exists()
                    else generate_ed25519(host, comment=f"fleet-host-{lease_id}"))
        return client, client_pub, host, host_pub

    def publish_deadline(self, lease: Lease, deadline: datetime) -> None:
        """The heartbeat's confirmed deadline as the reaper's `fleet:deadline` tag: one CreateTags
        for all the lease's instances per beat (reap.py ends them once it has passed)."""
        ids = [m.provider_ref["instance_id"] for m in lease.machines if m.provider_ref.get("instance_id")]
        value = iso_tag(deadline)
        ec2 = self._ec2_for(lease)
        for start in range(0, len(ids), CREATE_TAGS_CHUNK):
            ec2.create_tags(Resources=ids[start:start + CREATE_TAGS_CHUNK], Tags=[{"Key": TAG_DEADLINE, "Value": value}])

    def _tags(self, plan: Plan, lease_id: str, template: TemplateOutputs, deadline_s: int) -> dict[str, str]:
        # The reaper's line: the earlier of max_duration and the budget's end at this lease's burn rate, + grace.
        life_s = min(plan.max_duration_s, plan.budget_deadline_s or plan.max_duration_s)
        expires = utcnow() + timedelta(seconds=life_s + EXPIRY_GRACE_S)
        return {
            "Name": f"fleet-{lease_id}", TAG_LEASE: lease_id,
            "fleet:run": plan.run_id or lease_id,
            "fleet:project": plan.project, "fleet:user": plan.user,
            "fleet:template": template.name,
            # The stack's controller policy lets its users launch, tag and end only their stack's machines.
            **({"fleet:stack": self.outputs.stack} if self.outputs.stack else {}),
            "fleet:expires-at": iso_tag(expires),
            # The first deadline, counted from now plus the longest launch + boot wait: the machine's
            # watchdog counts from its boot, and the first heartbeat replaces this once SSH answers.
            TAG_DEADLINE: iso_tag(utcnow() + timedelta(seconds=deadline_s + self.ready_timeout_s)),
        }

    def lease(self, plan: Plan, lease_id: str, deadline_s: int,
              on_machine: Callable[[Machine], None] | None = None, watch: LeaseWatch | None = None) -> Lease:
        """`watch.max_wait_s` (`--wait`): no capacity anywhere is waited out in fleet's queue (capacity.py)."""
        tpl = self.outputs.template(plan.template.name)
        refuse_past_reaper_cap(self.outputs, plan.max_duration_s)
        if not self.sandbox:
            self._refuse_fake_endpoint()      # before anything is launched
        # The mix was chosen before the budget reserved money for it: launch exactly that one
        # (across AZs, spot then on-demand), never another of a different price.
        choices = self.offers(tpl.name, plan.gpus)
        chosen = [o for o in choices if o.instance_type == plan.instance_type and o.machines == plan.machine_count]
        if plan.instance_type and not chosen:
            raise UsageError(f"template {tpl.name!r} no longer offers {plan.machine_count} × {plan.instance_type}",
                             hint=f"see `fleet offers --gpus {plan.gpus}`")
        choices = chosen or choices[:1]
        key_path, client_pub, host_key_path, host_pub = self._keys(lease_id)
        from ...remote.agent import AGENT_PATH, agent_source
        telemetry = AGENT_PATH.with_name("telemetry.py")
        user_data = render(BootSpec(
            lease_id=lease_id, authorized_key=client_pub, host_private_key=host_key_path.read_text(),
            host_public_key=host_pub, deadline_s=deadline_s, max_duration_s=plan.max_duration_s,
            agent_source=agent_source(),   # one file: the modules it imports embedded
            telemetry_source=telemetry.read_text() if telemetry.exists() else None))
        ec2 = self.ec2
        try:
            instances, offer = self._adopt(lease_id, choices)
            if not instances:
                spot = self.prices().spot
                attempts = plan_attempts(choices, self.outputs.subnets, spot_first=tpl.spot,
                                         spot_price=lambda t, az: getattr((spot.get(t) or {}).get(az), "price", None))
                # Tags per round: their deadlines count from the launch, not from when the wait began.
                attempt, instances = launch_waiting(lambda on_attempt: launch(
                    ec2, attempts, lease_id=lease_id, launch_template_id=tpl.launch_template_id,
                    user_data=user_data, tags=self._tags(plan, lease_id, tpl, deadline_s),
                    network=self._network(), image_id=self.pinned_image, on_attempt=on_attempt, sleep=self.sleep),
                    watch, lease_id=lease_id, plan=plan, region=self.outputs.region, open_db=self._queue_db)
                offer = attempt.offer
            ids = [i["InstanceId"] for i in sorted(instances, key=lambda i: (i.get("AmiLaunchIndex", 0),
                                                                             i["InstanceId"]))]
            running = wait_for_state(ec2, lease_id, ids, "running", timeout_s=self.ready_timeout_s,
                                     sleep=self.sleep, stack=self.outputs.stack)
            # Bounded pool: sandbox sshd start-ups / real SSH port waits overlap instead of queueing.
            # Each reported (in this thread) as soon as it is reachable; instances killed before
            # that are found by their fleet:lease tag (describe), so `fleet down` still bills them.
            with ThreadPoolExecutor(max_workers=min(16, len(running))) as pool:
                futures = [submit_or_thread(pool, self._machine, inst, rank, lease_id, offer, key_path, host_pub,
                                            deadline_s, plan) for rank, inst in enumerate(running)]
                try:
                    for future in as_completed(futures):
                        if on_machine is not None:
                            on_machine(future.result())
                except BaseException:   # none goes on bringing a machine up while _cleanup terminates it
                    for f in futures:
                        f.cancel()
                    wait(futures)       # also the plain threads a pool refusing work (shutdown) left
                    raise
                machines = [f.result() for f in futures]
        except BaseException as exc:
            try:
                self._cleanup(lease_id)
            except FleetError as cleanup_error:
                raise InfrastructureError(f"lease {lease_id} failed ({exc}) and so did cleaning up: "
                                          f"{cleanup_error}", hint="run `fleet reap` to terminate what is "
                                                                   "left") from None
            if isinstance(exc, (FleetError, KeyboardInterrupt, SystemExit)):
                raise
            raise translate(exc, f"leasing {gpus_text(plan.gpus)} for lease {lease_id}") from None
        now = utcnow()
        return Lease(id=lease_id, provider=self.name, template=tpl.name, machines=machines, created_at=now,
                     deadline=now + timedelta(seconds=deadline_s),
                     max_deadline=now + timedelta(seconds=plan.max_duration_s), project=plan.project,
                     user=plan.user, heartbeat_ttl_s=plan.heartbeat_ttl_s,
                     meta={"region": self.outputs.region, "stack": self.outputs.stack,
                           "instance_type": offer.instance_type,
                           "machines": offer.machines, "spot": any(m.spot for m in machines),
                           "price_per_hour": str(sum((m.price_per_hour for m in machines), Decimal(0))),
                           "sandbox": bool(self.sandbox),
                           IMAGE_META: lease_image(self.ec2, self.pinned_image or tpl.image_id, tpl.recipe)})

    def _queue_db(self):
        """The shared state's database, where a lease waiting for capacity queues (`fleet queue`)."""
        from ...state import open_state
        return open_state(getattr(self.config, "state_url", None)).db

    def image_exists(self, image: ImageRef) -> bool:
        """fleet.environment.image.ChecksImages: a rerun refuses an AMI that was deregistered."""
        return image_exists(self.ec2, image.id)

    def use_image(self, image: ImageRef) -> None:
        """fleet.environment.image.ChecksImages: this provider's leases boot `image` (a rerun's
        recorded AMI) instead of the launch template's current one."""
        self.pinned_image = image.id

    def _network(self) -> dict[str, Any]:
        return {"security_group_id": self.outputs.security_group_id,
                "public_ip": self.aws.connect != "private"}

    def _adopt(self, lease_id: str, choices: list[MachineMix]) -> tuple[list[dict], MachineMix | None]:
        """A retried lease (controller restarted mid-launch) adopts what it already launched."""
        existing = find_instances(self.ec2, lease_filter(lease_id, self.outputs.stack), states=("pending", "running"))
        if not existing:
            return [], None
        types = {i["InstanceType"] for i in existing}
        for offer in choices:
            if types == {offer.instance_type} and len(existing) == offer.machines:
                return existing, offer
        terminate_lease(self.ec2, lease_id, sleep=self.sleep, stack=self.outputs.stack)   # a partial leftover
        return [], None

    def _machine(self, inst: dict, rank: int, lease_id: str, offer: MachineMix, key_path: Path, host_pub: str,
                 deadline_s: int, plan: Plan) -> Machine:
        iid = inst["InstanceId"]
        spot = inst.get("InstanceLifecycle") == "spot"
        ref = {"instance_id": iid, "region": self.outputs.region, "az": inst.get("Placement", {}).get(
            "AvailabilityZone"), "private_ip": inst.get("PrivateIpAddress"), "public_ip": inst.get("PublicIpAddress")}
        if self.sandbox:
            bound = self.sandbox.bind(iid, lease_id, key_path, key_path.with_name("host_ed25519"), host_pub,
                                      deadline_s=deadline_s,
                                      max_s=plan.max_duration_s, private_ip=inst.get("PrivateIpAddress"))
            host, port, user, workdir, python = (bound["host"], bound["port"], bound["user"], bound["workdir"],
                                                 bound["python"])
            # the loopback machine's own containment (a cgroup unit where fleet may write cgroup v2)
            ref.update(sandbox_dir=bound["dir"], simulated_gpus=True, isolation=bound.get("isolation", "unknown"),
                       supervisor_user=bound.get("supervisor_user"), supervisor_dir=bound.get("supervisor_dir"),
                       supervisor_python=bound.get("supervisor_python"))
        else:
            self._refuse_fake_endpoint()
            public = self._network()["public_ip"]
            host = inst.get("PublicIpAddress") if public else inst.get("PrivateIpAddress")
            if not host:
                raise MachineUnreachable(f"instance {iid} has no {'public' if public else 'private'} IP address",
                                         hint="check the subnet's public IP setting, or set "
                                                             "[aws] connect = \"private\" from inside the VPC")
            port, user, workdir, python = 22, MACHINE_USER, WORKDIR, "python3"
            # A VM of its own: nothing else runs there; terminated at release, powered off (= terminated)
            # by its watchdog at the deadline.
            ref["isolation"] = "instance"
            # A detached run's supervisor on node 0 logs in as a user of its own (userdata.py).
            ref.update(supervisor_user=SUPERVISOR_USER, supervisor_dir=SUPERVISOR_DIR, supervisor_python="python3")
            wait_tcp(host, port, self.ready_timeout_s, self.sleep)
        # Ranks rendezvous over the VPC (private IP); in the sandbox every machine is on loopback.
        peer = host if self.sandbox else (inst.get("PrivateIpAddress") or host)
        # What this machine costs: a spot machine its AZ's spot price, an on-demand one the on-demand
        # price, whatever the mix was quoted at; the meter bills it at this (money/metering.py).
        price, ref["price_source"] = self.prices().machine_price(offer.instance_type, spot=spot, zone=ref["az"] or "")
        return Machine(id=iid, lease_id=lease_id, node_rank=rank, host=host, port=port, user=user, peer_host=peer,
                       key_path=str(key_path), host_key=host_pub, workdir=workdir,
                       gpu_slots=tuple(range(offer.gpus_per_machine)), python=python,
                       price_per_hour=price if price is not None else (offer.price_per_machine_hour or Decimal(0)),
                       instance_type=offer.instance_type, spot=spot, provider_ref=ref, zone=ref["az"] or "")

    def _refuse_fake_endpoint(self) -> None:
        """An endpoint override (moto) hands out fake addresses: never connect to them."""
        endpoint = os.environ.get("AWS_ENDPOINT_URL_EC2") or os.environ.get("AWS_ENDPOINT_URL") or ""
        if endpoint and not self.aws.allow_custom_endpoint:
            raise EnvironmentProblem(f"AWS_ENDPOINT_URL is {endpoint} (not AWS) and FLEET_AWS_SANDBOX is not set, "
                                     "so the instances' addresses are not real machines",
                                     hint="export FLEET_AWS_SANDBOX=1 (see scripts/aws_sandbox.py), or set "
                                          "[aws] allow_custom_endpoint = true for a real private endpoint")

    # -- release (describe: lookup.py) ------------------------------------------------------------
    def notice_url(self, machine: Machine) -> str | None:
        """Spot machines read their reclaim notice from IMDSv2; the sandbox serves it from files
        under the machine's binding (sandbox.py `interrupt`)."""
        if not machine.spot:
            return None
        if machine.provider_ref.get("sandbox_dir"):
            return f"file://{machine.provider_ref['sandbox_dir']}/imds"
        return "http://169.254.169.254"

    def release(self, lease: Lease) -> None:
        self._ec2_for(lease)
        self._cleanup(lease.id, lease)

    def release_machines(self, lease: Lease, machine_ids: list[str]) -> None:
        """Terminate those instances of the lease (only ones carrying its tag) and wait until they are."""
        ec2 = self._ec2_for(lease)
        try:
            terminate_lease(ec2, lease.id, timeout_s=self.ready_timeout_s, sleep=self.sleep, only=set(machine_ids),
                            stack=self._stack_of(lease))
        except FleetError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, f"terminating {len(machine_ids)} machine(s) of lease {lease.id}") from None
        finally:
            from .sandbox import existing_sandbox
            sandbox = self.sandbox or existing_sandbox()
            if sandbox:
                sandbox.unbind([m.id for m in lease.machines if m.id in set(machine_ids)])

    def _cleanup(self, lease_id: str, lease: Lease | None = None) -> None:
        """Terminate everything tagged with the lease, wait, then drop sandbox machines and keys."""
        try:
            terminate_lease(self.ec2, lease_id, timeout_s=self.ready_timeout_s, sleep=self.sleep,
                            stack=self._stack_of(lease))
        except FleetError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, f"terminating lease {lease_id}") from None
        finally:
            from .sandbox import existing_sandbox
            sandbox = self.sandbox or existing_sandbox()
            if sandbox:
                sandbox.unbind_lease(lease_id)
        from ...keys import secure_delete
        d = lease_dir(lease_id)
        for name in ("id_ed25519", "host_ed25519"):
            secure_delete(d / name)
        shutil.rmtree(d, ignore_errors=True)
