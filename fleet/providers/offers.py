"""`fleet offers`: the machine mixes a provider's templates allow for a GPU count, cheapest first,
with prices: the same `offers()` that stage plan of `fleet up` takes the first of."""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from ..errors import UsageError
from ..gpus import gpus_text
from ..render import RIGHT, Column, Records, Table
from .base import MachineMix

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..gpus import GpuType


@dataclass(frozen=True)
class OfferList:
    provider: str
    gpus: int
    region: str
    offers: tuple[MachineMix, ...]
    price_source: str = ""           # AWS: where the prices come from, and when
    price_retrieved: str = ""

    def to_json(self) -> dict:
        out = {"gpus": self.gpus, "provider": self.provider, "region": self.region,
               "offers": [o.to_json() for o in self.offers]}
        if self.price_source:
            out["price_table"] = {"source": self.price_source, "retrieved": self.price_retrieved}
        return out

    def table(self) -> Table:
        where = self.provider + (f" ({self.region})" if self.region else "")
        columns = [Column("template", no_wrap=True), Column("mix", no_wrap=True), Column("GPU", no_wrap=True),
                   Column("$/hour", align=RIGHT), Column("$/machine-h", align=RIGHT), Column("spot")]
        rows = [(o.template, f"{o.machines} × {o.instance_type}", f"{o.gpus_per_machine}×{o.gpu_model}",
                 _usd(o.price_per_hour, 2), _usd(o.price_per_machine_hour, 3),
                 "first" if o.spot else "no") for o in self.offers]
        notes = [f"Prices: {self.price_source}. Override in fleet.toml [prices]."] if self.price_source else []
        return Table(columns, rows, title=f"{gpus_text(self.gpus)} on {where}, cheapest first", notes=notes,
                     records=Records(("offers",), [o.to_json() for o in self.offers], rows_key="offers",
                                     meta={"gpus": self.gpus, "provider": self.provider, "region": self.region}))


def _usd(amount, places: int) -> str:
    """A price with `places` decimals, or more where fewer would round a real price to zero (spot)."""
    if amount is None:
        return "?"
    text = f"{amount:.{places}f}"
    return f"{amount.normalize():f}" if amount and not amount.quantize(Decimal(1).scaleb(-places)) else text


def parse_gpus_flag(text: str) -> "tuple[int, GpuType | None]":
    """`--gpus 8` / `--gpus A100:8` for a listing, which needs a count."""
    from ..config.values import MAX_GPUS
    from ..gpus import GpuRequestError, parse_gpu_request
    try:
        request = parse_gpu_request(text, max_count=MAX_GPUS)
    except GpuRequestError as exc:
        raise UsageError(f"--gpus: {exc}") from None
    if request.count is None:
        raise UsageError(f"--gpus {text}: say how many, as in {request.type}:8")
    return request.count, request.type


def list_offers(provider_name: str, gpus: int, *, template: str | None = None, config=None,
                refresh: bool = False, gpu_type: "GpuType | None" = None) -> OfferList:
    """Every mix of `template` (default: each of the provider's templates) for exactly `gpus` GPUs
    (of `gpu_type`, when given). A template that cannot is skipped (its reason kept for the error
    if none can); one asked for by name raises its own error."""
    from . import registry
    provider = registry.provider_class(provider_name).from_config(config)
    aws = _aws(provider)
    if aws is not None:
        aws.catalog(refresh=refresh)
        aws.prices(refresh=refresh)
    names = [template] if template else sorted(provider.templates())
    rows: list[MachineMix] = []
    reasons = []
    for name in names:
        try:
            rows.extend(provider.offers(name, gpus) if gpu_type is None else provider.offers(name, gpus, gpu_type))
        except UsageError as exc:
            if template:
                raise
            reasons.append(f"{name}: {exc.message}")
    if not rows and gpu_type is not None:
        from .base import gpu_types
        raise UsageError(f"no {provider.name} template has {gpus} × {gpu_type} GPUs; it has: "
                         + "; ".join(gpu_types(provider)), hint="ask for one of those")
    if not rows:
        raise UsageError(f"no {provider.name} template can give exactly {gpus_text(gpus)}",
                         hint="; ".join(reasons)[:300] or "add a template")
    rows.sort(key=lambda o: (o.price_per_hour is None, o.price_per_hour or 0, o.machines))
    region = next((o.region for o in rows if o.region), "")
    prices = aws.prices() if aws is not None else None
    return OfferList(provider.name, gpus, region, tuple(rows), price_summary(prices, rows) if prices else "",
                     prices.retrieved if prices else "")


def price_summary(prices, rows) -> str:
    """Where an AWS listing's prices come from: the Price List API (region, date), the spot price
    history, and/or the shipped table (its date)."""
    types = {o.instance_type for o in rows} - set(prices.overridden)
    live = {t for t in types if t in prices.live}
    parts = []
    if live:
        parts.append(f"on-demand from the AWS Price List API ({prices.live_region}, "
                     f"{max(prices.live[t] for t in live)})")
    if types - live:
        parts.append(f"on-demand from the list price table of {prices.retrieved} ({prices.region})")
    if any(o.spot and o.price_source.startswith("spot ") for o in rows):
        parts.append("spot-first templates at the cheapest AZ's spot price")
    return "; ".join(parts)


def _aws(provider):
    """The AWS provider's extras (its EC2 catalogue and price table), when that is the one asked."""
    if provider.name != "aws":
        return None
    from .aws.provider import AWSProvider
    return provider if isinstance(provider, AWSProvider) else None
