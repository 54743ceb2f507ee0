"""Stage "plan": which provider, which template, and the machine mix, chosen once (an `Offer`).

Everything after this stage, the budget first, reads the mix from the Offer; the provider is then
asked to lease exactly that mix (Offer.to_plan).
"""
from __future__ import annotations

from dataclasses import replace

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
    templates = provider.templates()
    if config.template not in templates:
        choices = ", ".join(sorted(templates)) or "none"
        raise UsageError(f"template {config.template!r} is not offered by the {provider.name} provider",
                         hint=f"choose one of: {choices}")
    return templates[config.template]


def choose_offer(provider, config: Config) -> Offer:
    """The provider's first (cheapest) mix for the request, as the run's one Offer. A mix of more
    machines than the provider leases at once is refused here, before anything is recorded."""
    from ..providers.base import check_machine_count, choose_mix
    template = template_for(provider, config)
    plan = make_plan(provider=config.provider, mix=choose_mix(provider, template.name, config.gpus),
                     max_duration_s=config.max_duration_s, heartbeat_ttl_s=config.heartbeat_ttl_s,
                     project=config.project, user=current_user(config.user))
    check_machine_count(provider, plan)   # 10**20 machines is a typo
    return Offer(provider=plan.provider, template=plan.template, machine_count=plan.machine_count, gpus=plan.gpus,
                 max_duration_s=plan.max_duration_s, heartbeat_ttl_s=plan.heartbeat_ttl_s, project=plan.project,
                 user=plan.user, instance_type=plan.instance_type, spot=plan.spot)


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
                 spot=any(m.spot for m in machines))
