"""Stage "plan": which provider, which template, and the machine mix, chosen once (an `Offer`),
and the `Quote` a user sees before any money is spent.

The mix is the cheapest the provider offers for the request: the named template, or the provider's
default template, or, when a GPU type is asked for (`--gpus A100:8`) and no template is named, every
template that has that GPU. Everything after this stage, the budget first, reads the mix from the
Offer; the provider is then asked to lease exactly that mix (Offer.to_plan).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from ..config.model import Config
from ..errors import UsageError
from ..models import Lease, Template, utcnow
from ..plan import current_user, make_plan
from .types import Offer


def provider_for(config: Config):
    """The provider `config.provider` names, built from the config by itself (its own section)."""
    from ..providers import registry
    return registry.create(config)


def template_for(provider, config: Config) -> Template:
    """The template the run uses: the one named, else the provider's own default."""
    from ..providers.base import default_template
    templates = provider.templates()
    name = config.template or default_template(provider)
    if name not in templates:
        choices = ", ".join(sorted(templates)) or "none"
        raise UsageError(f"template {name!r} is not offered by the {provider.name} provider",
                         hint=f"choose one of: {choices}")
    return templates[name]


def _offers(provider, template: str, config: Config):
    if config.gpu_type is None:   # providers written before GPU types take two arguments
        return provider.offers(template, config.gpus)
    return provider.offers(template, config.gpus, config.gpu_type)


def candidate_mixes(provider, config: Config) -> list:
    """Every mix that meets the request, cheapest first (unknown prices last, then fewer machines).
    With no template named: the provider's default, or, when it cannot give that many GPUs (a
    1-GPU request of an 8-GPU default), every template that can."""
    if config.template:
        names = [template_for(provider, config).name]
    elif config.gpu_type is None:
        default_refusal: UsageError | None = None
        try:
            mixes = _offers(provider, template_for(provider, config).name, config)
            if mixes:
                return _sorted(mixes)
        except UsageError as exc:
            default_refusal = exc
        try:
            return _choose_among(provider, list(provider.templates()), config)
        except UsageError:
            if default_refusal is None:
                raise
            raise default_refusal from None
    else:
        names = list(provider.templates())
    return _choose_among(provider, names, config)


def _sorted(mixes: list) -> list:
    return sorted(mixes, key=lambda m: (m.price_per_hour is None, m.price_per_hour or 0, m.machines))


def _choose_among(provider, names: list[str], config: Config) -> list:
    mixes, refusals = [], []
    for name in names:
        try:
            mixes.extend(_offers(provider, name, config))
        except UsageError as exc:   # e.g. a count this template's machines cannot add up to
            if len(names) == 1:
                raise
            refusals.append(exc)
    if not mixes:
        if config.gpu_type is None and refusals:
            raise refusals[0]
        raise _nothing_matches(provider, config)
    return _sorted(mixes)


def _nothing_matches(provider, config: Config) -> UsageError:
    from ..providers.base import gpu_types
    asked = f"{config.gpus} × {config.gpu_type}" if config.gpus else str(config.gpu_type)
    where = f"template {config.template!r}" if config.template else f"the {provider.name} provider"
    have = "; ".join(gpu_types(provider)) or "none listed"
    hint = "ask for one of those" + (", or another --template" if config.template else
                                     ", or another --provider")
    return UsageError(f"no machine of {where} has {asked} GPUs; it has: {have}", hint=hint)


def choose_offer(provider, config: Config) -> Offer:
    """The provider's first (cheapest) mix for the request, as the run's one Offer. A mix of more
    machines than the provider leases at once is refused here, before anything is recorded."""
    from ..providers.base import check_machine_count
    mix = candidate_mixes(provider, config)[0]
    plan = make_plan(provider=config.provider, mix=mix, max_duration_s=config.max_duration_s,
                     heartbeat_ttl_s=config.heartbeat_ttl_s, project=config.project,
                     user=current_user(config.user, check=True))   # recorded with the lease, run, ledger, tags
    check_machine_count(provider, plan)   # 10**20 machines is a typo
    template = plan.template
    override = _price_override(template, config, plan.instance_type)
    if override is not None:      # the machines carry the price they are billed at (status, summary)
        from dataclasses import replace
        template = replace(template, price_per_hour=override, price_source="fleet.toml [prices]")
    return Offer(provider=plan.provider, template=template, machine_count=plan.machine_count, gpus=plan.gpus,
                 max_duration_s=plan.max_duration_s, heartbeat_ttl_s=plan.heartbeat_ttl_s, project=plan.project,
                 user=plan.user, instance_type=plan.instance_type, spot=plan.spot, region=mix.region,
                 zones=tuple(mix.zones), gpu_type=config.gpu_type)


def offer_for_lease(provider, lease: Lease) -> Offer:
    """`fleet run LEASE`: the mix is the kept lease's own; it may live until its max deadline."""
    from ..errors import NotFound
    template = provider.templates().get(lease.template)
    if template is None:
        raise NotFound(f"template {lease.template!r} of lease {lease.id} is no longer offered")
    machines = lease.machines
    per = len(machines[0].gpu_slots) if machines else template.gpus_per_machine
    types = {m.instance_type for m in machines if m.instance_type}
    instance_type = types.pop() if len(types) == 1 else ""
    if per != template.gpus_per_machine:
        template = replace(template, gpus_per_machine=per)
    return Offer(provider=lease.provider, template=template, machine_count=len(machines), gpus=lease.gpus,
                 max_duration_s=max(1, int((lease.max_deadline - utcnow()).total_seconds())),
                 heartbeat_ttl_s=lease.heartbeat_ttl_s, project=lease.project, user=lease.user,
                 instance_type=instance_type if instance_type != template.name else "",
                 spot=any(m.spot for m in machines), region=str(lease.meta.get("region") or ""),
                 zones=tuple(sorted({m.zone for m in machines if m.zone})))


@dataclass(frozen=True)
class Quote:
    """The plan as shown before any money is spent (`fleet up` asks with it; `fleet up --dry-run`
    prints it): the machines, where and how they run, what they cost per hour, and the most the run
    can cost: max_duration × price, or the run's budget when that is smaller (the budget stops it)."""

    provider: str
    template: str
    gpus: int
    machines: int
    instance_type: str
    gpu: str                               # "A100 80GB", "A10G 24GB (simulated)"
    lifecycle: str                         # "spot" | "on-demand"
    region: str
    zones: tuple[str, ...]
    price_per_hour: Decimal | None         # the whole lease, per hour
    price_source: str
    shadow: bool                           # a would-cost price (simulated machines, Slurm): nothing is billed
    max_duration_s: int
    budget: Decimal | None
    gpu_type: str = ""                     # what was asked for ("A100:8"), empty when any
    simulated: bool = False                # the machines themselves are simulated (local, the AWS sandbox);
                                           # shadow without it: real machines at an internal price (Slurm)
    ceiling_per_hour: Decimal | None = None   # the whole lease, where the price may change (spot: on-demand)
    # Where the run sends what is the user's, when a setting says (a fleet.toml may be someone else's):
    store: str = ""                        # the snapshot store the code and [data] go to ("": FLEET_HOME's)
    state: str = ""                        # the state database, its password shown as *** ("": FLEET_HOME's)
    secrets: tuple[str, ...] = ()          # environment variables passed from this computer to every machine
    stack: str = ""                        # AWS: where fleet.toml's [aws] takes the stack outputs from

    @property
    def max_cost(self) -> Decimal | None:
        """max_duration × the most it can cost per hour: the ceiling where the price may change (a
        spot price may rise to on-demand, or spot have no capacity), else the price (None: unknown)."""
        per_hour = self.ceiling_per_hour if self.ceiling_per_hour is not None else self.price_per_hour
        if per_hour is None:
            return None
        return (per_hour * self.max_duration_s / 3600).quantize(Decimal("0.000001"))

    @property
    def most_cost(self) -> Decimal | None:
        """The most the run can cost: the budget stops it first when that is smaller."""
        bounds = [b for b in (self.max_cost, self.budget) if b is not None]
        return min(bounds) if bounds else None

    def to_json(self) -> dict[str, Any]:
        def money(v: Decimal | None) -> str | None:
            return None if v is None else str(v)
        return {"provider": self.provider, "template": self.template, "gpus": self.gpus,
                "gpu_type": self.gpu_type or None, "gpu": self.gpu, "machines": self.machines,
                "instance_type": self.instance_type, "lifecycle": self.lifecycle, "region": self.region or None,
                "zones": list(self.zones), "price_per_hour_usd": money(self.price_per_hour),
                "price_source": self.price_source, "simulated": self.simulated, "shadow_price": self.shadow,
                "price_ceiling_per_hour_usd": money(self.ceiling_per_hour),
                "max_duration_s": self.max_duration_s, "max_cost_usd": money(self.max_cost),
                "budget_usd": money(self.budget), "most_cost_usd": money(self.most_cost),
                "store": self.store or None, "state": self.state or None, "secrets": list(self.secrets),
                "stack": self.stack or None}

    @classmethod
    def of(cls, offer: Offer, config: Config) -> "Quote":
        from ..money.budget import shadow_priced
        t = offer.template
        memory = f" {round(t.gpu_memory_mib / 1024)}GB" if t.gpu_memory_mib else ""
        simulated = " (simulated)" if t.simulated_gpus else ""
        gpu_type = "" if offer.gpu_type is None else f"{offer.gpu_type}:{offer.gpus}"
        price, source = offer.price_per_hour, t.price_source
        ceiling = None if getattr(t, "price_ceiling_per_hour", None) is None \
            else t.price_ceiling_per_hour * offer.machine_count
        override = _price_override(t, config, offer.instance_type)
        if override is not None:   # [prices] fixes the price: the budget and the ledger use it, so the plan does
            price, source, ceiling = override * offer.machine_count, "fleet.toml [prices]", None
        return cls(provider=offer.provider, template=t.name, gpus=offer.gpus, machines=offer.machine_count,
                   instance_type=offer.instance_type or t.name, gpu=f"{t.gpu_model or 'GPU'}{memory}{simulated}",
                   lifecycle="spot" if offer.spot else "on-demand", region=offer.region, zones=offer.zones,
                   price_per_hour=price, price_source=source, shadow=shadow_priced(t),
                   max_duration_s=offer.max_duration_s, budget=config.budget, gpu_type=gpu_type,
                   simulated=bool(t.simulated_gpus), ceiling_per_hour=ceiling, **_destinations(config))


def _destinations(config: Config) -> dict[str, Any]:
    from ..masking import without_state_password, without_url_passwords
    return {"store": without_url_passwords(str(config.store or "")),
            "state": without_state_password(str(config.state_url or "")),
            "secrets": tuple(config.secrets), "stack": _stack_source(config)}


def _stack_source(config: Config) -> str:
    """The stack outputs (network, image, bucket of the machines) `[aws]` names; "" where the
    environment's FLEET_AWS_OUTPUTS, which wins, is set, or for another provider."""
    import os
    if config.provider != "aws" or os.environ.get("FLEET_AWS_OUTPUTS"):
        return ""
    from ..providers.aws.provider import AWSProvider
    source = AWSProvider.settings_from(config).outputs_source()
    if source.get("outputs"):
        return f"{source['outputs']} ([aws] outputs)"
    return f"pulumi stack {source['stack']} in {source.get('stack_dir') or '.'}" if source.get("stack") else ""


def _price_override(template, config: Config, instance_type: str) -> Decimal | None:
    """The per-machine price `[prices]` sets for this template or instance type (run/budget.py's
    BudgetGate prices the run by the same resolve_price), None where it sets none."""
    from ..money.budget import resolve_price
    price = resolve_price(template, config.prices, instance_type=instance_type) if config.prices else None
    if price is None or price.source != "fleet.toml [prices]":
        return None
    return Decimal(price.per_hour_micro) / 1_000_000


def quote(config: Config, provider=None) -> Quote:
    """The plan for `config`, priced, without leasing, pinning or recording anything (`--dry-run`)."""
    provider = provider if provider is not None else provider_for(config)
    return Quote.of(choose_offer(provider, config), config)
