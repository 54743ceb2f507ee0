"""What a fleet stack's templates offer: the EC2 instance-type catalogue, prices, fleet templates,
and the machine mixes for a GPU request (cheapest first). Mixed into AWSProvider, which supplies
`outputs`, `ec2`, `sandbox`, `config` and the `_catalog` cache."""
from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from ...errors import FleetError, UsageError
from ...gpus import GpuType
from ...models import Template
from ..base import MachineMix
from .catalog import InstanceType, PriceTable, load_catalog, load_prices, offers
from .session import translate


class StackOffers:
    _catalog: dict[str, InstanceType] | None

    def catalog(self, refresh: bool = False) -> dict[str, InstanceType]:
        if self._catalog is None or refresh:
            try:
                self._catalog = load_catalog(self.ec2, self.outputs.region, refresh=refresh)
            except FleetError:
                raise
            except Exception as exc:  # noqa: BLE001 — botocore errors become one line
                raise translate(exc, "reading the EC2 instance-type catalogue") from None
        return self._catalog

    def prices(self) -> PriceTable:
        return load_prices(getattr(self.config, "prices", None) or {})

    def templates(self) -> dict[str, Template]:
        catalog, prices = self.catalog(), self.prices()
        overrides = getattr(self.config, "prices", None) or {}
        out = {}
        for name, t in self.outputs.templates.items():
            try:
                cheapest = offers(t, t.gpus_per_machine, catalog, prices)[0].price_per_hour
            except UsageError:
                cheapest = None
            price = cheapest
            source = f"cheapest mix for {t.gpus_per_machine} GPUs, {prices.source} ({prices.retrieved})"
            if name in overrides:
                price, source = Decimal(str(overrides[name])), "fleet.toml [prices]"
            out[name] = Template(
                name=name, provider="aws", gpus_per_machine=t.gpus_per_machine,
                gpu_model=t.gpu_model or (catalog[t.instance_types[0]].gpu_model
                                          if t.instance_types[0] in catalog else ""),
                simulated_gpus=bool(self.sandbox), price_per_hour=price, price_source=source,
                instance_types=t.instance_types, spot=t.spot,
                description=f"launch template {t.launch_template_id}; " + ", ".join(t.instance_types),
                gpu_memory_mib=(catalog[t.instance_types[0]].gpu_memory_mib or None
                                if t.instance_types[0] in catalog else None))
        return out

    @property
    def default_template(self) -> str:
        """The stack's template with the most GPUs per machine: a multi-GPU request on the fewest
        machines (the first such template in the stack's order)."""
        templates = self.outputs.templates
        if not templates:
            raise UsageError("the fleet stack declares no templates", hint="see docs/stacks.md")
        return max(templates, key=lambda name: templates[name].gpus_per_machine)

    def gpu_types(self) -> list[str]:
        """Each GPU the stack's templates can launch, with the instance types that carry it."""
        catalog = self.catalog()
        by_label: dict[str, list[str]] = {}
        for t in self.outputs.templates.values():
            for name in t.instance_types:
                info = catalog.get(name)
                model = info.gpu_model if info else (t.gpu_model or "unknown")
                memory = f" {round(info.gpu_memory_mib / 1024)}GB" if info and info.gpu_memory_mib else ""
                where = by_label.setdefault(model + memory, [])
                if name not in where:
                    where.append(name)
        return [f"{label} ({', '.join(names)})" for label, names in by_label.items()]

    def offers(self, template: str, gpus: int | None, gpu_type: GpuType | None = None) -> list[MachineMix]:
        """The machine mixes `template` allows for exactly `gpus` GPUs (None: one machine's worth of
        the template), cheapest first; with `gpu_type`, only instance types with that GPU."""
        tpl = self.outputs.template(template)
        catalog = self.catalog()
        if gpu_type is not None:
            kept = tuple(n for n in tpl.instance_types
                         if gpu_type.matches(catalog[n].gpu_model if n in catalog else tpl.gpu_model,
                                             catalog[n].gpu_memory_mib if n in catalog else None))
            if not kept:
                return []
            tpl = replace(tpl, instance_types=kept)
            if gpus is None:   # one machine's worth of that GPU, not of the template's first type
                gpus = min(catalog[n].gpus if n in catalog else tpl.gpus_per_machine for n in kept)
        mixes = offers(tpl, tpl.gpus_per_machine if gpus is None else gpus, catalog, self.prices(),
                       region=self.outputs.region)
        zones = tuple(self.outputs.subnets)
        return [replace(m, simulated_gpus=bool(self.sandbox), zones=zones) for m in mixes]
