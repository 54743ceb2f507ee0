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
from .pricing import (PricesUnavailable, cached_on_demand, cached_spot, live_prices_enabled, pricing_client,
                      warn_once)
from .session import translate


class StackOffers:
    _catalog: dict[str, InstanceType] | None
    _prices: PriceTable | None = None

    def catalog(self, refresh: bool = False) -> dict[str, InstanceType]:
        if self._catalog is None or refresh:
            try:
                self._catalog = load_catalog(self.ec2, self.outputs.region, refresh=refresh)
            except FleetError:
                raise
            except Exception as exc:  # noqa: BLE001 — botocore errors become one line
                raise translate(exc, "reading the EC2 instance-type catalogue") from None
        return self._catalog

    def prices(self, refresh: bool = False) -> PriceTable:
        """The shipped table with `[prices]`, overlaid with live on-demand prices for the stack's
        instance types and spot prices for its spot-first templates' types in its AZs (pricing.py),
        read once per provider. Where the APIs cannot answer: the table, and one warning line."""
        if getattr(self, "_prices", None) is None or refresh:
            table = load_prices(getattr(self.config, "prices", None) or {})
            self._prices = self._live(table, refresh) if live_prices_enabled(bool(self.sandbox)) else table
        return self._prices

    def _live(self, table: PriceTable, refresh: bool = False) -> PriceTable:
        region = self.outputs.region
        templates = self.outputs.templates.values()
        names = sorted({n for t in templates for n in t.instance_types} - table.overridden)
        spot_names = sorted({n for t in templates if t.spot for n in t.instance_types} - table.overridden)
        prices, live = dict(table.prices), {}
        try:
            found, live = cached_on_demand(region, names, lambda: pricing_client(self._session), refresh=refresh)
            prices.update(found)
        except PricesUnavailable as exc:
            other = "" if region == table.region else f"; prices in {region} may differ"
            warn_once(f"on-demand {region}", f"AWS Price List API unavailable ({exc}): on-demand prices are "
                                             f"the list price table of {table.retrieved} ({table.region}){other}")
        spot = {}
        try:
            spot = cached_spot(region, spot_names, tuple(self.outputs.subnets), lambda: self.ec2, refresh=refresh)
        except PricesUnavailable as exc:
            warn_once(f"spot {region}", f"EC2 spot price history unavailable ({exc}): spot is priced at the "
                                        "on-demand price, which it never exceeds")
        return replace(table, prices=prices, live=live, live_region=region, spot=spot)

    def templates(self) -> dict[str, Template]:
        catalog, prices = self.catalog(), self.prices()
        overrides = getattr(self.config, "prices", None) or {}
        out = {}
        for name, t in self.outputs.templates.items():
            try:
                cheapest = offers(t, t.gpus_per_machine, catalog, prices, zones=tuple(self.outputs.subnets))[0]
            except UsageError:
                cheapest = None
            price = cheapest.price_per_hour if cheapest else None
            source = f"cheapest mix for {t.gpus_per_machine} GPUs" + (f": {cheapest.price_source}" if cheapest else "")
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
        zones = tuple(self.outputs.subnets)
        mixes = offers(tpl, tpl.gpus_per_machine if gpus is None else gpus, catalog, self.prices(),
                       region=self.outputs.region, zones=zones)
        return [replace(m, simulated_gpus=bool(self.sandbox), zones=zones) for m in mixes]
