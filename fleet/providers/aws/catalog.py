"""What can be launched and what it costs: GPU instance types, prices, and machine mixes.

The catalogue comes from `describe_instance_types` (GpuInfo: count, model, memory), cached on disk
under $FLEET_HOME/cache/aws/ for a week. On-demand prices come from the AWS Price List API and
spot prices from the spot price history (pricing.py, cached), else from a shipped on-demand table
(prices.json, with its source and date); `[prices]` in fleet.toml overrides both. A *mix* is how a
number of GPUs is met from a template's allowed instance types: e.g. 8 GPUs = one p4d.24xlarge or
two g5.12xlarge; a spot-first template's mix is priced at the cheapest AZ's spot price.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from functools import reduce
from pathlib import Path
from typing import Any, Mapping

from ...errors import ConfigError, UsageError
from ...gpus import gpus_text
from ...paths import subdir
from ..base import MachineMix
from .outputs import TemplateOutputs
from .pricing import SpotPrice, endpoint_suffix

PRICES_PATH = Path(__file__).with_name("prices.json")
CACHE_MAX_AGE_S = 7 * 24 * 3600
# GPU families fleet knows; one wildcard filter per family keeps the describe call small.
GPU_FAMILIES = ("p3", "p3dn", "p4d", "p4de", "p5", "p5e", "p5en", "p6-b200", "g4dn", "g5", "g6", "g6e")


@dataclass(frozen=True)
class InstanceType:
    name: str
    gpus: int
    gpu_model: str
    gpu_memory_mib: int
    vcpus: int
    memory_mib: int


# -- catalogue ---------------------------------------------------------------------------------

def _cache_path(region: str) -> Path:
    # The sandbox (a moto endpoint) must never share a cache with the real account.
    return subdir("cache") / "aws" / f"instance-types-{region}{endpoint_suffix()}.json"


def fetch_catalog(ec2) -> dict[str, InstanceType]:
    """Every GPU instance type the region offers, from describe_instance_types (paginated)."""
    found: dict[str, InstanceType] = {}
    pages = ec2.get_paginator("describe_instance_types").paginate(
        Filters=[{"Name": "instance-type", "Values": [f"{f}.*" for f in GPU_FAMILIES]}])
    for page in pages:
        for it in page.get("InstanceTypes", []):
            gpus = (it.get("GpuInfo") or {}).get("Gpus") or []
            if not gpus:
                continue
            found[it["InstanceType"]] = InstanceType(
                name=it["InstanceType"],
                gpus=sum(int(g.get("Count", 0)) for g in gpus),
                gpu_model=str(gpus[0].get("Name", "")),
                gpu_memory_mib=int((gpus[0].get("MemoryInfo") or {}).get("SizeInMiB", 0)),
                vcpus=int((it.get("VCpuInfo") or {}).get("DefaultVCpus", 0)),
                memory_mib=int((it.get("MemoryInfo") or {}).get("SizeInMiB", 0)),
            )
    return found


def load_catalog(ec2, region: str, *, refresh: bool = False, max_age_s: float = CACHE_MAX_AGE_S
                 ) -> dict[str, InstanceType]:
    path = _cache_path(region)
    if not refresh and path.exists():
        try:
            cached = json.loads(path.read_text())
            if time.time() - float(cached["fetched_at"]) < max_age_s and cached.get("types"):
                return {n: InstanceType(**t) for n, t in cached["types"].items()}
        except (ValueError, KeyError, TypeError):
            pass   # a damaged cache is simply refetched
    catalog = fetch_catalog(ec2)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"fetched_at": time.time(), "region": region,
                               "types": {n: asdict(t) for n, t in catalog.items()}}, indent=1))
    os.replace(tmp, path)
    return catalog


# -- prices ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PriceTable:
    """Per instance type: the on-demand price (live where the Price List API answered, else the
    shipped table's, else [prices]) and, for spot, the latest price per AZ."""
    prices: dict[str, Decimal]
    source: str
    retrieved: str
    overridden: frozenset[str] = frozenset()
    region: str = "us-east-1"                                    # the shipped table's region
    live: Mapping[str, str] = field(default_factory=dict)        # type → date read from the API
    live_region: str = ""
    spot: Mapping[str, Mapping[str, SpotPrice]] = field(default_factory=dict)   # type → AZ → price

    def price(self, instance_type: str) -> Decimal | None:
        return self.prices.get(instance_type)

    def source_of(self, instance_type: str) -> str:
        if instance_type in self.overridden:
            return "fleet.toml [prices]"
        if instance_type in self.live:
            return f"on-demand, AWS Price List API ({self.live_region}, {self.live[instance_type]})"
        if instance_type in self.prices:
            return f"list price table of {self.retrieved} ({self.region})"
        return "unknown: set [prices] in fleet.toml"

    def spot_price(self, instance_type: str, zones: tuple[str, ...] = ()) -> SpotPrice | None:
        """The cheapest AZ's spot price (among `zones` when given); None where unknown or overridden."""
        if instance_type in self.overridden:
            return None
        found = [p for z, p in (self.spot.get(instance_type) or {}).items() if not zones or z in zones]
        return min(found, key=lambda p: (p.price, p.zone)) if found else None

    def machine_price(self, instance_type: str, *, spot: bool, zone: str) -> tuple[Decimal | None, str]:
        """What one launched machine costs per hour: its AZ's spot price, or the on-demand price."""
        if spot:
            quote = (self.spot.get(instance_type) or {}).get(zone) if instance_type not in self.overridden else None
            if quote is not None:
                return quote.price, quote.describe()
        return self.price(instance_type), self.source_of(instance_type)


def load_prices(overrides: Mapping[str, Any] | None = None) -> PriceTable:
    shipped = json.loads(PRICES_PATH.read_text())
    prices = {k: Decimal(v) for k, v in shipped["prices"].items()}
    over = set()
    for key, value in (overrides or {}).items():
        try:
            prices[key] = Decimal(str(value))
        except InvalidOperation:
            raise ConfigError(f"price for {key!r} is not a number: {value!r}", key="prices") from None
        over.add(key)
    return PriceTable(prices, shipped["source"], shipped["retrieved"], frozenset(over),
                      region=shipped.get("region", "us-east-1"))


# -- mixes -------------------------------------------------------------------------------------

def template_gpu_unit(template: TemplateOutputs, catalog: Mapping[str, InstanceType]) -> int:
    """The GPU step every mix is built from: the gcd of the allowed types' GPU counts."""
    counts = [catalog[t].gpus for t in template.instance_types if t in catalog and catalog[t].gpus]
    return reduce(math.gcd, counts) if counts else template.gpus_per_machine


def offers(template: TemplateOutputs, gpus: int, catalog: Mapping[str, InstanceType], prices: PriceTable,
           region: str = "", zones: tuple[str, ...] = ()) -> list[MachineMix]:
    """Every mix of the template's allowed instance types that gives exactly `gpus`, cheapest first
    (unknown prices last, then fewer machines first). A spot-first template's mix is priced at the
    cheapest of `zones`' spot prices where one is known."""
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
        raise UsageError(f"--gpus must be a positive integer, got {gpus!r}")
    found: list[MachineMix] = []
    for name in template.instance_types:
        info = catalog.get(name)
        per = info.gpus if info else template.gpus_per_machine
        if per < 1 or gpus % per:
            continue
        price, source, ceiling = prices.price(name), prices.source_of(name), None
        spot = prices.spot_price(name, zones) if template.spot else None
        if spot is not None:
            fallback = "" if price is None else f"; on-demand ${price.normalize():f}/h where there is no spot capacity"
            price, source, ceiling = spot.price, spot.describe() + fallback, price
        found.append(MachineMix(provider="aws", template=template.name, instance_type=name, machines=gpus // per,
                                gpus_per_machine=per, gpu_model=(info.gpu_model if info else template.gpu_model),
                                price_per_machine_hour=price, spot=template.spot,
                                price_source=source, region=region, price_ceiling_per_machine_hour=ceiling,
                                gpu_memory_mib=(info.gpu_memory_mib or None) if info else None))
    if not found:
        sizes = ", ".join(f"{n}: {gpus_text(catalog[n].gpus if n in catalog else template.gpus_per_machine)}"
                          for n in template.instance_types)
        unit = template_gpu_unit(template, catalog)
        raise UsageError(f"no mix of template {template.name!r} instance types gives exactly {gpus_text(gpus)} "
                         f"({sizes})", hint=f"use --gpus a multiple of {unit}, or a template with other "
                                            "instance types")
    order = {n: i for i, n in enumerate(template.instance_types)}
    found.sort(key=lambda o: (o.price_per_hour is None, o.price_per_hour or 0, o.machines,
                              order[o.instance_type]))
    return found
