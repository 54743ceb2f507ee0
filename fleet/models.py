"""The nouns of fleet, as plain dataclasses shared by every layer.

Money is Decimal (never float sums); times are timezone-aware UTC datetimes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
TYPE_CHECKING = False   # see fleet/__init__.py: on the path of every `fleet status`
if TYPE_CHECKING:
    from typing import Any

    from .gpus import GpuType


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat()
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, float) and value - value != 0:
        return None     # NaN or infinity (a machine's or a damaged row's figure): JSON has neither
    return value


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    dt = datetime.fromisoformat(value)
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Template:
    """A machine template: what one machine of a lease looks like and what it costs."""

    name: str
    provider: str                      # "local" | "ssh" | "aws"
    gpus_per_machine: int
    gpu_model: str = "simulated"
    simulated_gpus: bool = False
    price_per_hour: Decimal | None = None   # per machine; for local, the shadow price ("would cost")
    price_source: str = ""
    instance_types: tuple[str, ...] = ()
    spot: bool = False
    description: str = ""
    gpu_memory_mib: int | None = None       # per GPU, where known (matches `--gpus A100-80GB:8`)
    # The most one machine can cost per hour where its price may change: a spot-priced AWS mix's
    # on-demand price (spot may rise to it, and spot without capacity falls back to on-demand).
    price_ceiling_per_hour: Decimal | None = None


@dataclass
class Machine:
    """Everything needed to reach one leased machine. Nothing downstream needs more."""

    id: str
    lease_id: str
    node_rank: int
    host: str
    port: int
    user: str
    key_path: str                      # private key made for this lease (mode 0600)
    host_key: str                      # pinned public host key, "ssh-ed25519 AAAA..."
    workdir: str                       # remote directory fleet owns on the machine
    gpu_slots: tuple[int, ...] = ()
    python: str = "python3"            # interpreter on the machine for the agent and setup
    price_per_hour: Decimal = Decimal("0")
    instance_type: str = ""
    spot: bool = False
    provider_ref: dict[str, Any] = field(default_factory=dict)   # provider's own ids (pid, instance id)
    peer_host: str = ""                # where the lease's other machines reach it (cloud: private IP)
    # Where its inputs (code, data) are staged when not in workdir: a directory on a filesystem the
    # lease's machines share (Slurm); machines with the same one get one staged copy between them.
    staging_dir: str = ""
    zone: str = ""                     # where it runs: AWS availability zone (empty where it means nothing)

    @property
    def rendezvous_host(self) -> str:
        return self.peer_host or self.host

    @property
    def agent_path(self) -> str:
        return f"{self.workdir}/.fleet/agent.py"

    @property
    def state_dir(self) -> str:
        return f"{self.workdir}/.fleet"

    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Machine":
        data = dict(data)
        data["gpu_slots"] = tuple(data.get("gpu_slots") or ())
        data["price_per_hour"] = Decimal(str(data.get("price_per_hour") or "0"))
        if not isinstance(data.get("provider_ref"), dict):   # damaged or planted: what release reads .get of
            data["provider_ref"] = {}
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


@dataclass
class Plan:
    """The decision made before any money is spent: which machines, what they cost, when they end."""

    provider: str
    template: Template
    gpus: int
    machine_count: int
    max_duration_s: int
    heartbeat_ttl_s: int
    project: str = "default"
    user: str = "unknown"
    instance_type: str = ""
    spot: bool = False
    run_id: str = ""                   # tagged on cloud machines (fleet:run)
    # When the run's budget is spent at this lease's full burn, seconds from leasing (None: no
    # budget); providers that tag an expiry for a reaper (AWS fleet:expires-at) cap it by this.
    budget_deadline_s: int | None = None
    telemetry_interval_s: float = 0.0  # the agent samples GPU telemetry this often (0: never)
    gpu_type: "GpuType | None" = None  # `--gpus A100:8`: providers that place machines (ssh, Slurm) honour it

    @property
    def gpus_per_machine(self) -> int:
        return self.template.gpus_per_machine

    @property
    def price_per_hour(self) -> Decimal:
        return (self.template.price_per_hour or Decimal("0")) * self.machine_count


@dataclass
class Lease:
    id: str
    provider: str
    template: str
    machines: list[Machine]
    created_at: datetime
    deadline: datetime                 # the controller's view of the machines' deadline (UTC)
    max_deadline: datetime             # never extended past this (max_duration)
    project: str = "default"
    user: str = "unknown"
    status: str = "active"             # active | released | expired
    keep_until: datetime | None = None
    heartbeat_ttl_s: int = 300
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def gpus(self) -> int:
        return sum(len(m.gpu_slots) for m in self.machines)


@dataclass
class MachineState:
    machine_id: str
    state: str      # "running" | "pending" | "gone" | "unreachable"
    detail: str = ""
    # For a machine the provider found that fleet's state never recorded (controller killed inside
    # `lease`): when it came to exist and when its own watchdog ends it, where the provider knows.
    # `fleet down` bills such machines from these (fleet/money/unbilled.py).
    unrecorded: bool = False
    started_at: datetime | None = None
    deadline_at: datetime | None = None
