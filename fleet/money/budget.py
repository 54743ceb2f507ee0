"""Budgets: money accrued over time, the policy that acts on it, and the deadline it implies.

Pure logic: no I/O, and every function that needs "now" takes it (or a clock) as an argument, so
the whole policy is tested with a fake clock.

Rules (README "Budgets"):
- Money is integer micro-dollars inside this module (1 USD = 1_000_000), Decimal at its edges.
- Every budget counts the price the machines carry: the billed price for cloud machines, the
  *shadow price* ("would cost") for local ones and Slurm allocations (`[slurm] price_per_gpu_hour`),
  the `[prices]` price for a team's hosts.
- A lease is refused up front when the remaining budget cannot pay its minimum billing.
- A warning at `warn_fraction` (80 %) of any budget; the run is stopped when what is left only pays
  for the grace period (so SIGTERM + grace + fetch finish inside the budget, give or take one tick).
- The budget is also a deadline: at the current burn rate it runs out at a known moment, and each
  machine's on-board deadline is capped by it. Deadlines travel to machines as *seconds from now*
  and the agent counts them on its own monotonic clock, so clock skew between controller and
  machine moves nothing; only the controller's own clock measures spend.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from typing import Callable, Iterable

from ..errors import BudgetRefused, UsageError

MICRO = 1_000_000
MAX_BUDGET = Decimal(10) ** 9     # beyond this a budget is a typo, and micro-dollar sums stay small
Clock = Callable[[], datetime]
# EC2 Linux bills per second with a 60 s minimum. Local machines, a team's own hosts and Slurm
# allocations bill nothing per lease (their price is a shadow/internal one, counted per second of
# sacct's elapsed time), so one second is their minimum.
DEFAULT_MIN_BILLING_S = {"aws": 60, "local": 1, "ssh": 1, "slurm": 1}


def utc_clock() -> datetime:
    return datetime.now(timezone.utc)


# -- money ----------------------------------------------------------------------------------------
def to_micro(amount: Decimal | int | str) -> int:
    return int((Decimal(str(amount)) * MICRO).to_integral_value(rounding=ROUND_HALF_UP))


def _digits_for(micro: int | float) -> int:
    """Precision that holds this amount exactly: a shared state's row may hold any integer, and the
    default 28 digits cannot quantize a huge one (InvalidOperation)."""
    return max(28, len(str(abs(round(micro)))) + 10)


def from_micro(micro: int) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = _digits_for(micro)
        return (Decimal(micro) / MICRO).quantize(Decimal("0.000001"))


def format_usd(micro: int | float) -> str:
    """Money as people read it, never rounded into a falsehood: cents as usual ("$12.34", "$0.50"),
    but an amount under a dollar that is not whole cents keeps three significant digits ("$0.0042",
    not "$0.00"; "$0.0299", not "$0.03"). The one formatter for every dollar amount fleet prints."""
    with localcontext() as ctx:
        ctx.prec = _digits_for(micro)
        return _format_usd(Decimal(round(micro)) / MICRO)


def _format_usd(amount: Decimal) -> str:
    sign, amount = ("-" if amount < 0 else ""), abs(amount)
    cents = amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    if amount >= 1 or amount == cents:
        return f"{sign}${cents:,.2f}"
    places = min(6, max(2, 2 - amount.adjusted()))
    text = f"{amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP):f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"{sign}${whole}.{frac.ljust(2, '0')}"


def parse_budget(value: object, *, what: str = "budget") -> Decimal:
    """A budget from config or a flag: a positive, finite number of US dollars."""
    if isinstance(value, bool):
        raise UsageError(f"{what} must be a number of US dollars, not {value!r}", hint="e.g. budget = 50")
    try:
        amount = Decimal(str(value).strip().lstrip("$"))
    except (InvalidOperation, ValueError):
        raise UsageError(f"{what} must be a number of US dollars, not {value!r}", hint="e.g. budget = 50") from None
    if not amount.is_finite():
        raise UsageError(f"{what} must be a finite number of US dollars, not {value!r}")
    if amount <= 0:
        raise UsageError(f"{what} must be more than zero dollars, got {value!r}",
                         hint="leave it out for no budget")
    if amount > MAX_BUDGET:
        raise UsageError(f"{what} of {value!r} dollars is not plausible (at most {MAX_BUDGET:,})",
                         hint="leave it out for no budget")
    return amount


def cost_micro(rate_per_hour_micro: int, seconds: float) -> int:
    """Cost of `seconds` at a per-hour rate, rounded to the nearest micro-dollar."""
    if seconds <= 0 or rate_per_hour_micro <= 0:
        return 0
    return int((Decimal(rate_per_hour_micro) * Decimal(repr(float(seconds))) / 3600)
               .to_integral_value(rounding=ROUND_HALF_UP))


# -- prices ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Price:
    per_hour_micro: int        # per machine
    source: str                # "aws on-demand table", "spot", "shadow: p4d.24xlarge", "fleet.toml [prices]"
    shadow: bool = False       # "would cost" (local, AWS sandbox, Slurm's internal price), not money billed


# Providers whose machines nobody bills per lease. A Slurm cluster charges fleet nothing per
# GPU-hour: `[slurm] price_per_gpu_hour` is an internal price a team sets so budgets mean something.
SHADOW_PRICED_PROVIDERS = ("local", "slurm")


def shadow_priced(template) -> bool:
    """Machines nobody bills: local ones, the AWS sandbox's (moto) instances, whose GPUs are
    simulated, and Slurm allocations. Their price is a shadow price: budgets count it, but it is
    reported as what the run would cost, never as money spent."""
    return template.provider in SHADOW_PRICED_PROVIDERS or bool(getattr(template, "simulated_gpus", False))



def resolve_price(template, prices: dict[str, Decimal] | None = None, *, instance_type: str = "") -> Price | None:
    """The per-machine price of a template: `[prices]` overrides win, then the template's own price."""
    prices = prices or {}
    for key in (template.name, instance_type, *getattr(template, "instance_types", ())):
        if key and key in prices:
            return Price(to_micro(prices[key]), "fleet.toml [prices]", shadow_priced(template))
    if template.price_per_hour is None:
        return None
    shadow = shadow_priced(template)
    source = template.price_source or ("shadow price" if shadow else "price table")
    return Price(to_micro(template.price_per_hour), source, shadow)


def require_price(template, prices: dict[str, Decimal] | None = None, *, instance_type: str = "") -> Price:
    """Leasing under a budget needs a price; without one we refuse and say how to set it."""
    price = resolve_price(template, prices, instance_type=instance_type)
    if price is None:
        raise BudgetRefused(
            f"template {template.name!r} has no known price, so a budget cannot be enforced",
            hint=f'set it in fleet.toml: [prices] "{template.name}" = <USD per machine-hour>')
    return price


# -- accrual --------------------------------------------------------------------------------------
@dataclass
class Segment:
    """One machine billed at one rate from `start` until `end` (None: still running)."""

    key: str
    rate_micro: int
    start: datetime
    end: datetime | None = None

    def cost_until(self, now: datetime) -> int:
        stop = min(now, self.end) if self.end else now
        return cost_micro(self.rate_micro, (stop - self.start).total_seconds())


class Accrual:
    """Running cost of a set of machine segments. Each total is computed from the segment's start,
    so per-tick rounding never drifts."""

    def __init__(self, clock: Clock = utc_clock):
        self.clock = clock
        self.segments: dict[str, Segment] = {}

    def start(self, key: str, rate_micro: int, at: datetime | None = None) -> Segment:
        seg = Segment(key, rate_micro, at or self.clock())
        self.segments[key] = seg
        return seg

    def stop(self, key: str, at: datetime | None = None) -> None:
        seg = self.segments.get(key)
        if seg and seg.end is None:
            seg.end = at or self.clock()

    def spent_micro(self, at: datetime | None = None) -> int:
        now = at or self.clock()
        return sum(s.cost_until(now) for s in self.segments.values())

    def burn_micro_per_hour(self) -> int:
        return sum(s.rate_micro for s in self.segments.values() if s.end is None)


# -- policy ---------------------------------------------------------------------------------------
@dataclass
class Scope:
    """One budget that applies to this run: the run itself, its project this month, its user this month."""

    name: str                    # "run", "project 'vision' (2025-06)", "user 'ana' (2025-06)"
    limit_micro: int
    spent_before_micro: int = 0  # spent by others in this scope (e.g. earlier runs this month)
    reserved_micro: int = 0      # still held by other live runs' reservations (fleet/money/reservations.py)
    kept_micro: int = 0          # other kept leases' time from now to their deadlines (money/kept.py)
    # This run's own spend before the scope's period began: a monthly scope counts only what the run
    # spent this month (a run from November 30 into December charges December its December hours).
    run_before_micro: int = 0

    def remaining(self, run_spent_micro: int) -> int:
        this_period = max(0, run_spent_micro - self.run_before_micro)
        return self.limit_micro - self.spent_before_micro - self.reserved_micro - self.kept_micro - this_period

    def describe(self) -> str:
        """'$10.00 limit, $3.00 spent, $6.00 reserved by other live runs' (what refusals print)."""
        return (f"{format_usd(self.limit_micro)} limit, {format_usd(self.spent_before_micro)} spent, "
                f"{format_usd(self.reserved_micro)} reserved by other live runs"
                + (f", {format_usd(self.kept_micro)} held by kept leases to their deadlines" if self.kept_micro else ""))


@dataclass(frozen=True)
class Verdict:
    action: str                  # "ok" | "warn" | "stop"
    scope: str | None
    spent_micro: int             # in the binding scope
    limit_micro: int | None
    remaining_micro: int | None
    message: str = ""


@dataclass
class BudgetPolicy:
    scopes: list[Scope]
    warn_fraction: Decimal = Decimal("0.8")
    grace_s: float = 30.0
    warned: set[str] = field(default_factory=set)
    reserved_micro: int = 0      # this run's own reservation in the shared scopes (0: none made)
    # The lease existed before this run (kept) and this run's time on it starts here: the meter's
    # re-checks must leave out only this run's own rows, as the first check did (metering.build_scopes).
    lease_kept_since: datetime | None = None

    def binding(self, run_spent_micro: int) -> Scope | None:
        return min(self.scopes, key=lambda s: s.remaining(run_spent_micro), default=None)

    def evaluate(self, run_spent_micro: int, burn_micro_per_hour: int) -> Verdict:
        """What to do now. "warn" is returned once per scope; "stop" every time it holds."""
        reserve = cost_micro(burn_micro_per_hour, self.grace_s)
        for scope in sorted(self.scopes, key=lambda s: s.remaining(run_spent_micro)):
            left = scope.remaining(run_spent_micro)
            spent = scope.limit_micro - left
            if left <= reserve:
                return Verdict("stop", scope.name, spent, scope.limit_micro, left,
                               f"budget for {scope.name} reached: {format_usd(spent)} of "
                               f"{format_usd(scope.limit_micro)} (what is left pays only the grace period)")
        for scope in self.scopes:
            left = scope.remaining(run_spent_micro)
            spent = scope.limit_micro - left
            if scope.name not in self.warned and spent >= scope.limit_micro * self.warn_fraction:
                self.warned.add(scope.name)
                held = f", incl. {format_usd(scope.reserved_micro)} reserved by other live runs" \
                    if scope.reserved_micro else ""
                return Verdict("warn", scope.name, spent, scope.limit_micro, left,
                               f"{format_usd(spent)} of the {format_usd(scope.limit_micro)} budget for "
                               f"{scope.name} spent ({spent * 100 // max(scope.limit_micro, 1)} %{held})")
        bind = self.binding(run_spent_micro)
        if bind is None:
            return Verdict("ok", None, run_spent_micro, None, None)
        left = bind.remaining(run_spent_micro)
        return Verdict("ok", bind.name, bind.limit_micro - left, bind.limit_micro, left)

    def remaining_micro(self, run_spent_micro: int) -> int | None:
        bind = self.binding(run_spent_micro)
        return None if bind is None else bind.remaining(run_spent_micro)


def minimum_billing(price_micro_per_hour: int, machines: int, provider: str,
                    min_billing_s: int | None = None) -> tuple[int, int]:
    """(micro-dollars, seconds): what a lease costs even if it ends at once."""
    billing_s = DEFAULT_MIN_BILLING_S.get(provider, 60) if min_billing_s is None else min_billing_s
    return cost_micro(price_micro_per_hour * machines, billing_s), billing_s


def refuse_unaffordable(policy: BudgetPolicy, *, price_micro_per_hour: int, machines: int,
                        provider: str, min_billing_s: int | None = None) -> None:
    """Refuse before spending: the remaining budget must pay at least the minimum billing."""
    bind = policy.binding(0)
    if bind is None:
        return
    minimum, billing_s = minimum_billing(price_micro_per_hour, machines, provider, min_billing_s)
    left = bind.remaining(0)
    if left <= 0 or left < minimum:
        shared = bind.name != "run"
        raise BudgetRefused(
            f"budget for {bind.name} has {format_usd(max(left, 0))} left"
            + (f" ({bind.describe()})" if shared else "")
            + f"; {machines} machine(s) at {format_usd(price_micro_per_hour)}/h cost at least "
            f"{format_usd(minimum)} ({billing_s} s minimum billing)",
            hint="raise the budget or lease fewer machines" + (
                "; money reserved by live runs comes back when they end" if shared and bind.reserved_micro else "")
            + ("; `fleet down` a kept lease to free what it holds" if shared and bind.kept_micro else ""))


# -- budget → deadline ----------------------------------------------------------------------------
def seconds_until_exhausted(remaining_micro: int | None, burn_micro_per_hour: int) -> float | None:
    """How long what is left lasts at the current burn rate (None: no budget or nothing burning)."""
    if remaining_micro is None or burn_micro_per_hour <= 0:
        return None
    return max(0.0, remaining_micro * 3600 / burn_micro_per_hour)


def capped_deadline_s(proposed_s: float, *, remaining_micro: int | None, burn_micro_per_hour: int,
                      max_left_s: float | None = None) -> int:
    """Seconds-from-now to hand a machine's watchdog: the heartbeat's proposal, never past
    max_duration and never past the moment the budget runs out at the current burn rate."""
    limits = [proposed_s]
    if max_left_s is not None:
        limits.append(max_left_s)
    exhausted = seconds_until_exhausted(remaining_micro, burn_micro_per_hour)
    if exhausted is not None:
        limits.append(exhausted)
    return max(0, math.floor(min(limits)))


def budget_deadline(now: datetime, remaining_micro: int | None, burn_micro_per_hour: int) -> datetime | None:
    left = seconds_until_exhausted(remaining_micro, burn_micro_per_hour)
    return None if left is None else now + timedelta(seconds=left)


# -- calendar scopes ------------------------------------------------------------------------------
def month_start(now: datetime) -> datetime:
    now = now.astimezone(timezone.utc)
    return datetime(now.year, now.month, 1, tzinfo=timezone.utc)


def month_label(now: datetime) -> str:
    return now.astimezone(timezone.utc).strftime("%Y-%m")


# -- idle policy ----------------------------------------------------------------------------------
class IdlePolicy:
    """Stop a run whose GPUs all stay below `threshold_percent` for `minutes`. Unknown utilisation
    (no GPU telemetry) never counts as idle."""

    def __init__(self, threshold_percent: float, minutes: float):
        if threshold_percent <= 0 or minutes <= 0:
            raise UsageError("idle policy needs a positive GPU percentage and a positive number of minutes")
        self.threshold = threshold_percent
        self.window = timedelta(minutes=minutes)
        self.idle_since: datetime | None = None

    def observe(self, now: datetime, utilisations: Iterable[float | None]) -> bool:
        """Feed one telemetry round; True once the GPUs have been idle for the whole window."""
        values = list(utilisations)
        if not values or any(u is None for u in values) or max(values) >= self.threshold:
            self.idle_since = None
            return False
        if self.idle_since is None:
            self.idle_since = now
        return now - self.idle_since >= self.window
