"""The provider contract, v2: four core calls, plus optional capabilities declared as mixins.

A provider makes machines reachable over SSH and takes them away again; it never runs experiment
code. The core calls:

- `offers(template, gpus)`: the machine mixes it can lease for a request, cheapest (preferred) first.
  The run takes the first one ONCE, before the budget reserves money for it (`choose_mix`).
- `lease(plan, lease_id, deadline_s)`: make `plan.machine_count` machines of the chosen mix. After it
  returns, every machine answers SSH (or will shortly), holds its own deadline (the watchdog from
  fleet/remote/agent/agent.py ends it `deadline_s` seconds from now unless extended) and has the
  agent at `machine.agent_path`. On failure, release whatever was made, then raise.
- `describe(lease)`: what the provider itself says about each machine (not fleet's state).
- `release(lease)`: destroy every machine of the lease. Idempotent: gone machines are fine.

Every provider also declares `max_machines_per_lease` (BaseProvider: 256): `fleet up` refuses a plan
with more machines before anything is recorded or started (`check_machine_count`).

Anything beyond that is a capability a provider declares by inheriting its mixin below, and callers
ask with `isinstance` (never by probing signatures or attributes). Each provider also owns its
fleet.toml section (`settings`, a `ProviderSettings`) and is built from the loaded Config by
`from_config`. Providers are found by name through fleet/providers/registry.py.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from ..errors import UsageError
from ..models import Lease, MachineState, Plan, Template

if TYPE_CHECKING:
    from ..gpus import GpuType

    from ..config.model import Config
    from ..config.schema import Key


@dataclass(frozen=True)
class MachineMix:
    """One way a provider can meet a GPU request: `machines` × `instance_type`, priced per machine."""

    provider: str
    template: str                            # the template asked for
    instance_type: str                       # what one machine is (AWS: an EC2 type; local: the template)
    machines: int
    gpus_per_machine: int
    gpu_model: str = ""
    price_per_machine_hour: Decimal | None = None
    spot: bool = False
    price_source: str = ""
    region: str = ""
    simulated_gpus: bool = False
    gpu_memory_mib: int | None = None        # per GPU, where known
    zones: tuple[str, ...] = ()              # where machines may land (AWS: the stack's subnets' AZs)
    price_ceiling_per_machine_hour: Decimal | None = None   # spot-priced: the on-demand price (models.Template)

    @property
    def gpus(self) -> int:
        return self.machines * self.gpus_per_machine

    @property
    def price_per_hour(self) -> Decimal | None:
        if self.price_per_machine_hour is None:
            return None
        return self.price_per_machine_hour * self.machines

    def machine_template(self) -> Template:
        """One machine of this mix as a Template (what a Plan and the budget read)."""
        return Template(name=self.template, provider=self.provider, gpus_per_machine=self.gpus_per_machine,
                        gpu_model=self.gpu_model, simulated_gpus=self.simulated_gpus,
                        price_per_hour=self.price_per_machine_hour, price_source=self.price_source,
                        instance_types=(self.instance_type,) if self.instance_type else (), spot=self.spot,
                        gpu_memory_mib=self.gpu_memory_mib,
                        price_ceiling_per_hour=self.price_ceiling_per_machine_hour)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["price_per_machine_hour"] = None if self.price_per_machine_hour is None else str(self.price_per_machine_hour)
        d["price_per_hour"] = None if self.price_per_hour is None else str(self.price_per_hour)
        ceiling = self.price_ceiling_per_machine_hour
        d["price_ceiling_per_machine_hour"] = None if ceiling is None else str(ceiling)
        d["gpus"] = self.gpus
        d["zones"] = list(self.zones)
        d["lifecycle"] = "spot" if self.spot else "on-demand"
        return d

    def gpu_label(self) -> str:
        """`A100 80GB` / `L4`: the GPU as a user asks for it."""
        memory = f" {round(self.gpu_memory_mib / 1024)}GB" if self.gpu_memory_mib else ""
        return (self.gpu_model or "GPU") + memory


class ProviderSettings:
    """A provider's own fleet.toml section, declared by the provider and parsed by fleet/config/loader.py's
    checker (so its errors name file:line and suggest close key names like every other table).

    Subclasses are dataclasses. `section` is the table name ([aws]) or, with `array`, the name of an
    array of tables ([[hosts]]); `keys` maps each key to a fleet.config.schema.Key."""

    section: ClassVar[str]
    help: ClassVar[str] = ""
    keys: ClassVar[dict[str, "Key"]] = {}
    array: ClassVar[bool] = False
    required: ClassVar[tuple[str, ...]] = ()   # per item, for arrays
    # The section in `fleet init`'s starter: commented-out TOML, every key with a comment. Empty:
    # written from `help` and `keys` (starter_block).
    starter: ClassVar[str] = ""

    @classmethod
    def starter_block(cls) -> str:
        """What `fleet init` writes for this section (every line commented out, so the file runs as is)."""
        if cls.starter:
            return cls.starter.strip("\n") + "\n"
        header = f"# [[{cls.section}]]" if cls.array else f"# [{cls.section}]"
        lines = [f"# {cls.help}" if cls.help else f"# {cls.section} settings", header]
        for name, key in cls.keys.items():
            value = "…" if key.default is None else _toml_value(key.default)
            lines.append(f"# {name} = {value}   # {key.help}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_fields(cls, fields: Any) -> "ProviderSettings":
        """Build from converted values: a dict (tables) or a list of dicts (arrays)."""
        return cls(**fields)  # type: ignore[call-arg]

    @classmethod
    def parse(cls, value: Any, *, where: str = "fleet.toml", text: str = "") -> "ProviderSettings":
        """Validate one section given as plain data (e.g. from code or another file); raises
        ConfigError naming `where` (and the line, when the source `text` is given)."""
        from ..config.loader import parse_section
        return parse_section(cls, value, where=where, text=text)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


# For a provider that declares no cap of its own.
DEFAULT_MAX_MACHINES_PER_LEASE = 256


@runtime_checkable
class Provider(Protocol):
    """The core every provider has (structural: the contract suite checks it with isinstance)."""

    name: str

    def templates(self) -> dict[str, Template]: ...

    def offers(self, template: str, gpus: int | None, gpu_type: GpuType | None = None) -> list[MachineMix]: ...

    def lease(self, plan: Plan, lease_id: str, deadline_s: int) -> Lease: ...

    def describe(self, lease: Lease) -> list[MachineState]: ...

    def release(self, lease: Lease) -> None: ...


class BaseProvider(ABC):
    """Shared defaults: construction from Config, template lookup, and one mix per template."""

    name: ClassVar[str]
    settings: ClassVar[type[ProviderSettings] | None] = None
    listed: ClassVar[bool] = True        # offered in help, errors and the JSON Schema (the fake is not)
    description: ClassVar[str] = ""
    # The most machines one lease may have (a property where it depends on the setup, e.g. an
    # inventory), and how a user could raise it; `check_machine_count` refuses more up front.
    max_machines_per_lease: int = DEFAULT_MAX_MACHINES_PER_LEASE
    machine_cap_hint: ClassVar[str] = "ask for fewer GPUs"

    @classmethod
    def from_config(cls, config: "Config | None") -> "BaseProvider":
        return cls()

    @classmethod
    def settings_from(cls, config: "Config | None") -> Any:
        """This provider's parsed section of `config`, or its defaults when the file has none."""
        found = (getattr(config, "provider_settings", None) or {}).get(cls.name)
        if found is None and cls.settings is not None:
            found = cls.settings.from_fields([] if cls.settings.array else {})
        return found

    @abstractmethod
    def templates(self) -> dict[str, Template]: ...

    def template(self, name: str) -> Template:
        templates = self.templates()
        if name not in templates:
            raise UsageError(f"template {name!r} is not offered by the {self.name} provider",
                             hint="choose one of: " + (", ".join(sorted(templates)) or "none"))
        return templates[name]

    @property
    def default_template(self) -> str:
        """The template `fleet up` uses when none is named and no GPU type is asked for."""
        templates = self.templates()
        if not templates:
            raise UsageError(f"the {self.name} provider offers no templates")
        return next(iter(templates))

    def gpu_types(self) -> list[str]:
        """What GPUs this provider has, one line each (`A10G 24GB: local-1gpu, local-4gpu`), for
        the message that says a requested GPU type is not there."""
        by_label: dict[str, list[str]] = {}
        for t in self.templates().values():
            memory = f" {round(t.gpu_memory_mib / 1024)}GB" if t.gpu_memory_mib else ""
            by_label.setdefault((t.gpu_model or "unknown") + memory, []).append(t.name)
        return [f"{label} ({', '.join(names)})" for label, names in by_label.items()]

    def offers(self, template: str, gpus: int | None, gpu_type: GpuType | None = None) -> list[MachineMix]:
        """One mix: as many machines of the template as the GPUs need (None: one machine); none
        when the template's GPUs are not `gpu_type`."""
        from ..plan import machines_for
        t = self.template(template)
        if gpu_type is not None and not gpu_type.matches(t.gpu_model, t.gpu_memory_mib):
            return []
        count, total = machines_for(gpus, t)
        return [MachineMix(provider=self.name, template=t.name, instance_type=t.name, machines=count,
                           gpus_per_machine=t.gpus_per_machine or total // count, gpu_model=t.gpu_model,
                           price_per_machine_hour=t.price_per_hour, spot=t.spot, price_source=t.price_source,
                           simulated_gpus=t.simulated_gpus, gpu_memory_mib=t.gpu_memory_mib)]

    @abstractmethod
    def lease(self, plan: Plan, lease_id: str, deadline_s: int) -> Lease: ...

    @abstractmethod
    def describe(self, lease: Lease) -> list[MachineState]: ...

    @abstractmethod
    def release(self, lease: Lease) -> None: ...


def choose_mix(provider: Provider, template: str, gpus: int | None) -> MachineMix:
    """The provider's choice for a request, made once: its first (cheapest) offer."""
    return provider.offers(template, gpus)[0]


def default_template(provider: Any) -> str:
    """`provider.default_template`, or the first template of a Protocol-only provider."""
    if isinstance(provider, BaseProvider):
        return provider.default_template
    templates = provider.templates()
    if not templates:
        raise UsageError(f"the {provider.name} provider offers no templates")
    return next(iter(templates))


def gpu_types(provider: Any) -> list[str]:
    if isinstance(provider, BaseProvider):
        return provider.gpu_types()
    return sorted({t.gpu_model for t in provider.templates().values() if t.gpu_model})


# The optional capabilities live in capabilities.py; their names stay importable from here.
from .capabilities import (CAPABILITIES, DescribesLeases, ExplainsLoss, HasHardLimit,  # noqa: E402,F401
                           HasLeaseMetadata, Interruption, InterruptionNotices, LeaseWatch, PublishesDeadline,
                           QueueStatus, Queueing, ReleasedFromAnywhere, ReleasesMachines, ReportsMachines,
                           StagesDataDirectly, StopsOnCancel, SupervisesFromNode0, SweepsLeftovers, capabilities)


def max_machines_per_lease(provider: Any) -> int:
    # A Protocol-only provider (no BaseProvider) gets the default cap.
    return int(getattr(provider, "max_machines_per_lease", DEFAULT_MAX_MACHINES_PER_LEASE))


def check_machine_count(provider: Any, plan: Plan) -> None:
    """Refuse, with one line naming the cap, a plan with more machines than the provider leases at once."""
    cap = max_machines_per_lease(provider)
    if plan.machine_count <= cap:
        return
    per = plan.template.gpus_per_machine
    hint = getattr(provider, "machine_cap_hint", None) or "ask for fewer GPUs"
    if per:
        hint += f", or a template with more than {per} GPU(s) per machine"
    raise UsageError(f"{plan.gpus} GPUs on {plan.template.name} is {plan.machine_count} machines; the "
                     f"{provider.name} provider leases at most {cap} machines at once", hint=hint)
