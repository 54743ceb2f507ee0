"""Live EC2 prices: on-demand from the AWS Price List API, spot from the EC2 spot price history.

On-demand: `pricing.get_products` (the API answers from us-east-1 for every region) filtered to one
instance type, the region's long name, Linux, shared tenancy, no pre-installed software and
capacity status Used; each PriceList entry is a JSON string whose OnDemand term carries the USD
price per hour. Spot: `ec2.describe_spot_price_history` (Linux/UNIX, StartTime=now), the latest
price per availability zone.

Both are cached under $FLEET_HOME/cache/aws/, keyed by region and endpoint (the sandbox's moto
server never shares a cache with the real account), with the date fetched: on-demand for a day,
spot for an hour. When the API cannot answer (no credentials, an endpoint error, moto without the
pricing service) the caller falls back to the shipped table and says so in one warning line
(`warn_once`); a failure is remembered for a few minutes so each command does not wait on it again.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Callable, Iterable

from ...paths import subdir

ON_DEMAND_TTL_S = 24 * 3600
SPOT_TTL_S = 3600
RETRY_FAILED_AFTER_S = 10 * 60
PRICING_API_REGION = "us-east-1"
ENV_LIVE = "FLEET_AWS_LIVE_PRICES"     # 0: never ask the APIs; 1: ask them even in the sandbox

# The Price List API names regions by their long names.
REGION_LOCATIONS = {
    "us-east-1": "US East (N. Virginia)", "us-east-2": "US East (Ohio)",
    "us-west-1": "US West (N. California)", "us-west-2": "US West (Oregon)",
    "ca-central-1": "Canada (Central)", "sa-east-1": "South America (Sao Paulo)",
    "eu-central-1": "EU (Frankfurt)", "eu-central-2": "EU (Zurich)", "eu-west-1": "EU (Ireland)",
    "eu-west-2": "EU (London)", "eu-west-3": "EU (Paris)", "eu-north-1": "EU (Stockholm)",
    "eu-south-1": "EU (Milan)", "eu-south-2": "EU (Spain)",
    "ap-south-1": "Asia Pacific (Mumbai)", "ap-south-2": "Asia Pacific (Hyderabad)",
    "ap-northeast-1": "Asia Pacific (Tokyo)", "ap-northeast-2": "Asia Pacific (Seoul)",
    "ap-northeast-3": "Asia Pacific (Osaka)", "ap-southeast-1": "Asia Pacific (Singapore)",
    "ap-southeast-2": "Asia Pacific (Sydney)", "ap-southeast-3": "Asia Pacific (Jakarta)",
    "ap-east-1": "Asia Pacific (Hong Kong)", "me-central-1": "Middle East (UAE)",
    "me-south-1": "Middle East (Bahrain)", "af-south-1": "Africa (Cape Town)",
    "il-central-1": "Israel (Tel Aviv)", "us-gov-west-1": "AWS GovCloud (US-West)",
    "us-gov-east-1": "AWS GovCloud (US-East)",
}


class PricesUnavailable(Exception):
    """The API could not answer; the message is one short reason."""


@dataclass(frozen=True)
class SpotPrice:
    price: Decimal             # USD per instance-hour
    zone: str                  # the availability zone it is offered in
    date: str                  # YYYY-MM-DD the price was read

    def describe(self) -> str:
        return f"spot ${self.price.normalize():f}/h ({self.zone}, {self.date})"


def live_prices_enabled(sandbox: bool, env: dict | None = None) -> bool:
    """AWS itself is asked; the sandbox and any other endpoint (moto has no pricing service and
    placeholder spot prices) are not, unless FLEET_AWS_LIVE_PRICES=1."""
    env = os.environ if env is None else env
    value = env.get(ENV_LIVE, "").strip().lower()
    if value in ("0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    return not sandbox and not (env.get("AWS_ENDPOINT_URL_EC2") or env.get("AWS_ENDPOINT_URL"))


_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    """One line on stderr per process and key (`fleet offers` and `fleet up` price more than once)."""
    if key not in _warned:
        _warned.add(key)
        from ...warn_sink import warn
        warn(message)


# -- on-demand: the Price List API ---------------------------------------------------------------

def product_filters(instance_type: str, location: str) -> list[dict[str, str]]:
    fields = {"ServiceCode": "AmazonEC2", "instanceType": instance_type, "location": location,
              "operatingSystem": "Linux", "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used"}
    return [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in fields.items()]


def _price(value: Any) -> Decimal | None:
    """A price as the APIs write it, or None where it is none fleet can bill by (NaN, infinite, zero,
    negative, not a number): such a row is skipped rather than failing or poisoning the rest."""
    try:
        price = Decimal(str(value))
        return price if price.is_finite() and price > 0 else None
    except InvalidOperation:
        return None


def parse_on_demand(price_list: Iterable[str | dict]) -> Decimal | None:
    """The hourly USD on-demand price in a get_products PriceList (each entry a JSON string). Capacity
    Block and other non-on-demand market products are skipped; several products left (should not
    happen with the filters above) give the highest price, so a budget errs safe."""
    found: list[Decimal] = []
    for entry in price_list:
        product = json.loads(entry) if isinstance(entry, str) else entry
        attributes = (product.get("product") or {}).get("attributes") or {}
        if attributes.get("marketoption", "OnDemand") != "OnDemand":
            continue
        for term in ((product.get("terms") or {}).get("OnDemand") or {}).values():
            for dimension in (term.get("priceDimensions") or {}).values():
                usd = (dimension.get("pricePerUnit") or {}).get("USD")
                if usd is None or not str(dimension.get("unit", "Hrs")).startswith("Hrs"):
                    continue
                price = _price(usd)
                if price is not None:
                    found.append(price)
    return max(found) if found else None


def fetch_on_demand(pricing, region: str, instance_types: Iterable[str]) -> dict[str, Decimal | None]:
    """One get_products (paginated) per instance type, up to 8 at once (a stack's dozen types would
    otherwise wait on a dozen round trips in a row); None where the region has no such product."""
    from concurrent.futures import ThreadPoolExecutor
    location = REGION_LOCATIONS.get(region)
    if location is None:
        raise PricesUnavailable(f"no Price List location known for region {region}")

    def one(name: str) -> Decimal | None:
        entries: list[str] = []
        token = None
        while True:
            kwargs: dict[str, Any] = {"ServiceCode": "AmazonEC2", "Filters": product_filters(name, location),
                                      "MaxResults": 100}
            if token:
                kwargs["NextToken"] = token
            page = pricing.get_products(**kwargs)
            entries.extend(page.get("PriceList") or [])
            token = page.get("NextToken")
            if not token:
                return parse_on_demand(entries)
    names = list(instance_types)
    if not names:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:   # boto3 clients are thread-safe
        return dict(zip(names, pool.map(one, names)))


# -- spot: the spot price history ----------------------------------------------------------------

def parse_spot_history(history: Iterable[dict], zones: Iterable[str] = ()) -> dict[str, dict[str, Decimal]]:
    """instance type → AZ → the latest price (by Timestamp) in the history, in `zones` when given."""
    wanted = set(zones)
    latest: dict[tuple[str, str], tuple[str, Decimal | None]] = {}
    for row in history:
        zone, name = row.get("AvailabilityZone", ""), row.get("InstanceType", "")
        if not zone or not name or (wanted and zone not in wanted):
            continue
        stamp = row.get("Timestamp")
        stamp = stamp.isoformat() if hasattr(stamp, "isoformat") else str(stamp or "")
        if "SpotPrice" not in row:
            continue
        price = _price(row["SpotPrice"])    # an AZ whose latest row is no price gets none
        if (name, zone) not in latest or stamp > latest[(name, zone)][0]:
            latest[(name, zone)] = (stamp, price)
    out: dict[str, dict[str, Decimal]] = {}
    for (name, zone), (_, price) in latest.items():
        if price is not None:
            out.setdefault(name, {})[zone] = price
    return out


def fetch_spot(ec2, instance_types: Iterable[str], zones: Iterable[str] = (),
               now: datetime | None = None) -> dict[str, dict[str, Decimal]]:
    """The spot price in effect now, per instance type and AZ (one paginated call for all types).
    Start and end both now: EC2 then also returns the last change before the start, which is the
    price in effect at it, however long ago it changed."""
    names = sorted(set(instance_types))
    if not names:
        return {}
    now = now or datetime.now(timezone.utc)
    rows: list[dict] = []
    pages = ec2.get_paginator("describe_spot_price_history").paginate(
        InstanceTypes=names, ProductDescriptions=["Linux/UNIX"], StartTime=now, EndTime=now)
    for page in pages:
        rows.extend(page.get("SpotPriceHistory") or [])
    return parse_spot_history(rows, zones)


# -- the cache -----------------------------------------------------------------------------------

def endpoint_suffix() -> str:
    """Empty for AWS itself; a hash of AWS_ENDPOINT_URL(_EC2) for any other endpoint (moto)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_EC2") or os.environ.get("AWS_ENDPOINT_URL") or ""
    return "-" + hashlib.sha256(endpoint.encode()).hexdigest()[:8] if endpoint else ""


def cache_path(kind: str, region: str) -> Path:
    return subdir("cache") / "aws" / f"prices-{kind}-{region}{endpoint_suffix()}.json"


class PriceCache:
    """Entries (instance type → {value, fetched_at, date}) in one JSON file per kind and region."""

    def __init__(self, kind: str, region: str, ttl_s: float, clock: Callable[[], float] = time.time):
        self.kind, self.region, self.ttl_s, self.clock = kind, region, ttl_s, clock
        self.path = cache_path(kind, region)

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) and data.get("region") == self.region else {}
        except (OSError, ValueError):
            return {}   # missing or damaged: refetched

    def _write(self, data: dict) -> None:
        data.update(region=self.region, kind=self.kind)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)

    def fresh(self, names: Iterable[str], refresh: bool = False) -> dict[str, dict]:
        """The entries still within the TTL. The file is read as untrusted (edited, an older layout,
        written on a computer whose clock ran ahead): an entry that is not well formed, holds a
        price that is not a positive number, or was fetched in the future is not fresh, so it is
        fetched again instead of failing the plan or being trusted forever."""
        if refresh:
            return {}
        now = self.clock()
        entries = self._read().get("entries")
        if not isinstance(entries, dict):
            return {}
        return {n: entries[n] for n in names if _well_formed(entries.get(n), self.kind)
                and 0 <= now - entries[n]["fetched_at"] < self.ttl_s}

    def store(self, values: dict[str, Any]) -> str:
        """Record `values` as fetched now; returns today's date (UTC) as stored."""
        now = self.clock()
        date = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%d")
        data = self._read()
        entries = data["entries"] = data.get("entries") if isinstance(data.get("entries"), dict) else {}
        for name, value in values.items():
            entries[name] = {"value": value, "fetched_at": now, "date": date}
        data.pop("failed_at", None)
        self._write(data)
        return date

    def recently_failed(self) -> str | None:
        data = self._read()
        failed_at = data.get("failed_at")
        if _number(failed_at) and 0 <= self.clock() - failed_at < RETRY_FAILED_AFTER_S:
            return str(data.get("failure") or "failed a moment ago")
        return None

    def remember_failure(self, reason: str) -> None:
        data = self._read()
        data.update(failed_at=self.clock(), failure=reason)
        self._write(data)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _positive_price(value: Any) -> bool:
    try:
        return isinstance(value, str) and Decimal(value).is_finite() and Decimal(value) > 0
    except InvalidOperation:
        return False


def _well_formed(entry: Any, kind: str) -> bool:
    """A cache entry as `store` writes it: fetched_at a number, a date, and the value an on-demand
    price (None: the Price List has no such product) or spot's {AZ: price}."""
    if not isinstance(entry, dict) or not _number(entry.get("fetched_at")) or not isinstance(entry.get("date"), str):
        return False
    value = entry.get("value")
    if kind == "spot":
        return isinstance(value, dict) and all(isinstance(z, str) and _positive_price(p) for z, p in value.items())
    return value is None or _positive_price(value)


def _reason(exc: BaseException) -> str:
    from .session import error_code, error_message
    code = error_code(exc)
    text = str(getattr(exc, "message", None) or error_message(exc))
    if text.lstrip().startswith("<"):          # an HTML error page (e.g. an endpoint without the service)
        text = f"HTTP {code or 'error'} from the endpoint"
    return (f"{code}: {text}" if code and code not in text else text)[:160]


def _cached(cache: PriceCache, names: list[str], refresh: bool,
            fetch: Callable[[list[str]], dict[str, Any]]) -> dict[str, dict]:
    """The cache's fresh entries for `names`, the missing ones fetched and stored first; a failure
    is remembered (the API is not asked again for a while) and raised as PricesUnavailable."""
    entries = cache.fresh(names, refresh)
    missing = [n for n in names if n not in entries]
    if not missing:
        return entries
    failed = None if refresh else cache.recently_failed()
    if failed:
        raise PricesUnavailable(failed)
    try:
        fetched = fetch(missing)
    except Exception as exc:  # noqa: BLE001 — any failure falls back to the table, with its reason
        reason = _reason(exc)
        cache.remember_failure(reason)
        raise PricesUnavailable(reason) from None
    cache.store(fetched)
    return cache.fresh(names)


def cached_on_demand(region: str, names: Iterable[str], pricing_client: Callable[[], Any], *,
                     clock: Callable[[], float] = time.time, refresh: bool = False
                     ) -> tuple[dict[str, Decimal], dict[str, str]]:
    """The on-demand price and the date it was read, per instance type the Price List knows,
    from the cache or the API (`refresh`: the API). Raises PricesUnavailable when anything needed
    could not be read."""
    names = sorted(set(names))
    cache = PriceCache("on-demand", region, ON_DEMAND_TTL_S, clock)

    def fetch(missing: list[str]) -> dict[str, Any]:
        fetched = fetch_on_demand(pricing_client(), region, missing)
        return {n: None if p is None else str(p) for n, p in fetched.items()}
    entries = _cached(cache, names, refresh, fetch)
    prices = {n: Decimal(e["value"]) for n, e in entries.items() if e.get("value") is not None}
    return prices, {n: entries[n]["date"] for n in prices}


def cached_spot(region: str, names: Iterable[str], zones: Iterable[str], ec2: Callable[[], Any], *,
                clock: Callable[[], float] = time.time, refresh: bool = False) -> dict[str, dict[str, SpotPrice]]:
    """instance type → AZ → SpotPrice, from the cache or describe_spot_price_history."""
    names, zones = sorted(set(names)), sorted(set(zones))
    cache = PriceCache("spot", region, SPOT_TTL_S, clock)

    def fetch(missing: list[str]) -> dict[str, Any]:
        fetched = fetch_spot(ec2(), missing)   # every AZ: the filter applies on reading
        return {n: {z: str(p) for z, p in fetched.get(n, {}).items()} for n in missing}
    entries = _cached(cache, names, refresh, fetch)
    return {n: {z: SpotPrice(Decimal(p), z, e["date"]) for z, p in (e.get("value") or {}).items()
                if not zones or z in zones}
            for n, e in entries.items()}


def pricing_client(session: Any = None):
    """A Price List API client: few retries and short timeouts, since the shipped table stands in."""
    from botocore.config import Config

    from ...boto_sessions import new_session
    from ...errors import EnvironmentProblem
    session = session or new_session()
    if session.get_credentials() is None:
        raise EnvironmentProblem("no AWS credentials found")
    return session.client("pricing", region_name=PRICING_API_REGION,
                          config=Config(retries={"mode": "standard", "max_attempts": 2},
                                        connect_timeout=5, read_timeout=20))
