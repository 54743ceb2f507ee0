"""Budgets at run time: the controller's meter for one run.

`prepare_budget` builds the run's budget policy and refuses before spending; `RunMeter` is driven
by the run loop: `start` when machines are leased, `tick` every few seconds (appends ledger rows,
returns the policy's verdict), `deadline_s` caps each heartbeat's extension by budget exhaustion,
`finish` closes the segments when the machines are released. The clock is injectable.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Callable

from ..errors import StateUnavailable
from .budget import (BudgetPolicy, Clock, IdlePolicy, Price, Scope, Verdict, capped_deadline_s, cost_micro,
                     minimum_billing, month_label, month_start, refuse_unaffordable, require_price,
                     seconds_until_exhausted, to_micro, utc_clock)
from .reservations import Reservations, reservation_amount
from .ledger import Ledger, OpenSegment, TickTelemetry

RETRY_S = 5.0    # while the state database is unreachable, the ledger is tried again this often


@dataclass
class BudgetLimits:
    run: Decimal | None = None
    project_monthly: Decimal | None = None
    user_monthly: Decimal | None = None
    warn_fraction: Decimal = Decimal("0.8")
    grace_s: float = 30.0

    @classmethod
    def from_config(cls, config) -> "BudgetLimits":
        """The limits as fleet/config/loader.py parsed and validated them (once: `--budget` is an override
        of `budget =` and goes through the same parser), so amounts are Decimals already."""
        b = config.budgets
        return cls(run=config.budget, project_monthly=b.project_monthly, user_monthly=b.user_monthly,
                   warn_fraction=Decimal(str(b.warn_fraction)), grace_s=float(b.grace_s))

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.run, self.project_monthly, self.user_monthly))


def build_scopes(limits: BudgetLimits, *, project: str, user: str, ledger: Ledger | None, now: datetime,
                 run_id: str | None = None, lease_id: str | None = None,
                 reservations: Reservations | None = None, lease_kept_since: datetime | None = None,
                 run_before_month_micro: int = 0) -> list[Scope]:
    """The budgets that apply; monthly ones start from what others spent this month (not this run)
    and what other live runs' reservations still hold (not this run's own). `run_before_month_micro`:
    what this run spent before this month began, which the monthly scopes leave out of its spend.

    A lease made for this run holds only this run's rows and reservation, so all of them are left
    out. `lease_kept_since`: the lease existed before this run (kept), whose time on it starts then;
    what earlier (or concurrent) runs spent and still hold on it counts like any other run's."""
    scopes = []
    if limits.run is not None:
        scopes.append(Scope("run", to_micro(limits.run)))
    month = month_start(now)
    kept = lease_kept_since is not None and run_id is not None
    for limit, kind, name, column in ((limits.project_monthly, "project", project, "project"),
                                      (limits.user_monthly, "user", user, "owner")):
        if limit is None:
            continue
        spent = ledger.spent_micro(**{column: name}, since=month, exclude_run=run_id, exclude_lease=lease_id,
                                   lease_kept_since=lease_kept_since) if ledger else 0
        held = 0
        if reservations is not None:
            held = (reservations.held_micro(**{column: name}, exclude_run=run_id, now=now) if kept else
                    reservations.held_micro(**{column: name}, exclude_lease=lease_id, now=now))
        from .kept import committed_micro
        rest = committed_micro(ledger, **{column: name}, exclude_lease=lease_id) if ledger else 0
        scopes.append(Scope(f"{kind} {name!r} ({month_label(now)})", to_micro(limit), spent, held, rest,
                            run_before_micro=run_before_month_micro))
    return scopes


def prepare_budget(limits: BudgetLimits, plan, *, ledger: Ledger | None, prices: dict | None = None,
                   now: datetime | None = None, run_id: str | None = None, reservations: Reservations | None = None,
                   lease_id: str | None = None,
                   lease_kept_since: datetime | None = None) -> tuple[BudgetPolicy | None, Price | None]:
    """Before leasing: the policy for this run, and the per-machine price it will accrue.
    Raises BudgetRefused for an unknown price or a budget that cannot pay the minimum billing.

    With `reservations` (and a lease id) and a monthly budget, the check and this lease's
    reservation are one transaction under a lock on the scopes, committed before returning.
    `lease_kept_since`: the run is on a lease that existed before it (build_scopes); the policy
    carries it so the meter's re-checks count the same rows."""
    if not limits.any:
        return None, None
    price = require_price(plan.template, prices, instance_type=plan.instance_type)
    now = now or utc_clock()
    shared = limits.project_monthly is not None or limits.user_monthly is not None
    if reservations is None or lease_id is None or not shared:
        policy = BudgetPolicy(build_scopes(limits, project=plan.project, user=plan.user, ledger=ledger, now=now,
                                           run_id=run_id), warn_fraction=limits.warn_fraction, grace_s=limits.grace_s,
                              lease_kept_since=lease_kept_since)
        refuse_unaffordable(policy, price_micro_per_hour=price.per_hour_micro, machines=plan.machine_count,
                            provider=plan.provider)
        return policy, price
    with reservations.db.transaction():
        reservations.lock_scopes(project=plan.project if limits.project_monthly is not None else None,
                                 owner=plan.user if limits.user_monthly is not None else None)
        policy = BudgetPolicy(build_scopes(limits, project=plan.project, user=plan.user, ledger=ledger, now=now,
                                           run_id=run_id, lease_id=lease_id, reservations=reservations,
                                           lease_kept_since=lease_kept_since),
                              warn_fraction=limits.warn_fraction, grace_s=limits.grace_s,
                              lease_kept_since=lease_kept_since)
        refuse_unaffordable(policy, price_micro_per_hour=price.per_hour_micro, machines=plan.machine_count,
                            provider=plan.provider)
        burn = price.per_hour_micro * plan.machine_count
        minimum, _ = minimum_billing(price.per_hour_micro, plan.machine_count, plan.provider)
        amount = reservation_amount(minimum_micro=minimum, estimate_micro=cost_micro(burn, plan.max_duration_s),
                                    room_micro=policy.remaining_micro(0))
        reservations.reserve(lease_id=lease_id, run_id=run_id, project=plan.project, owner=plan.user,
                             amount_micro=amount, minimum_micro=minimum, lifetime_s=plan.max_duration_s, now=now)
    policy.reserved_micro = amount
    return policy, price


class RunMeter:
    """Accrues a run's cost into the ledger every tick and says when the budget says stop."""

    def __init__(self, ledger: Ledger, policy: BudgetPolicy | None = None, *, limits: BudgetLimits | None = None,
                 clock: Clock = utc_clock, idle: IdlePolicy | None = None,
                 telemetry: Callable[[float], dict[str, TickTelemetry]] | None = None,
                 latest_utilisations: Callable[[], list] | None = None, persist_every_s: float = 0.0,
                 reservations: Reservations | None = None,
                 ends_by: Callable[[datetime], datetime | None] | None = None):
        """`persist_every_s`: ledger rows are appended at most this often (a crash loses at most
        that much); the budget is still evaluated on every tick from the exact in-memory spend.
        `ends_by(now)`: the deadline the machines hold, past which none of them lives (its watchdog
        ended it): a controller that was stopped or asleep past it bills up to it, not to its waking."""
        self.ledger, self.policy, self.limits = ledger, policy, limits
        self.reservations = reservations   # other live runs' reservations shrink "remaining" each tick
        self.clock, self.idle = clock, idle
        self.telemetry, self.latest_utilisations = telemetry, latest_utilisations
        self.segments: list[OpenSegment] = []
        self.shared: list[OpenSegment] = []   # machines another live run bills: counted here, not written
        self.run_spent_micro = 0
        self.last_tick: datetime | None = None
        self.project = self.user = ""
        self.run_id: str | None = None
        self.lease_id: str | None = None
        self.stopped: Verdict | None = None
        self.persist_every_s = persist_every_s
        self.last_persist: datetime | None = None
        self.reached: bool | None = None                  # see tick
        self.unreachable: StateUnavailable | None = None  # the last failure, until the database answers again
        self.retry_at: datetime | None = None
        self.ends_by = ends_by

    def billable(self, at: datetime) -> datetime:
        """`at`, or the machines' deadline when that came first: no machine outlives it, so no time after it
        is billed (as `fleet down` closes a dead controller's segments at min(now, deadline))."""
        end = self.ends_by(at) if self.ends_by is not None else None
        return at if end is None else min(at, end)

    def start(self, lease, price: Price | None, run_id: str | None = None, at: datetime | None = None,
              paid_by_others: frozenset[str] = frozenset()) -> None:
        """Open a ledger segment per machine not opened yet (an unknown price without a budget
        bills $0, marked so). `paid_by_others`: machines of a kept lease that another live run bills
        already; this run counts their cost as its own (its budget, its record) but writes no rows
        for them, so `fleet report` has each machine-second once."""
        at = at or self.clock()
        for machine in lease.machines:
            self.open_machine(lease, machine, price, run_id=run_id, at=at, shared=machine.id in paid_by_others)
        self.project, self.user, self.run_id, self.lease_id = lease.project, lease.user, run_id, lease.id

    def open_machine(self, lease, machine, price: Price | None, run_id: str | None = None,
                     at: datetime | None = None, *, shared: bool = False) -> None:
        """One machine's segment, opened as soon as the provider reports it (from inside its lease
        call, before the Lease exists: `lease` then carries only id, project, user, template and
        provider). A machine already open is left alone."""
        at = at or self.clock()
        if any(seg.fixed["machine_id"] == machine.id for seg in self.segments + self.shared):
            return
        self.project, self.user, self.run_id, self.lease_id = lease.project, lease.user, run_id, lease.id
        rate = getattr(machine, "price_per_hour", None)
        own = (getattr(machine, "provider_ref", None) or {}).get("price_source")
        if price is not None and own and rate is not None and price.source != "fleet.toml [prices]":
            # A provider that prices each machine by its market (AWS: its AZ's spot price, or the
            # on-demand price where spot had no capacity) bills it at that, not at the mix's quote;
            # a simulated machine's price stays a would-cost.
            price = Price(to_micro(rate), str(own), price.shadow)
        p = price or Price(to_micro(rate or 0), "machine price" if rate else "unknown price",
                           lease.provider == "local")
        if shared:
            from .attributed import attributed_segment
            self.shared.append(attributed_segment(lease=lease, machine=machine, price=p, run_id=run_id, at=at))
        else:
            self.segments.append(self.ledger.open_segment(lease=lease, machine=machine, price=p, run_id=run_id,
                                                          at=at))
        if self.last_persist is None:
            self.last_tick = self.last_persist = at

    def pending_micro(self, at: datetime) -> int:
        """Accrued since the last ledger rows, not yet written."""
        at = self.billable(at)
        return sum(s.cost_between(s.last_end or s.start, max(at, s.last_end or s.start))
                   for s in self.segments + self.shared if not s.closed)

    @property
    def burn_micro_per_hour(self) -> int:
        return sum(s.price.per_hour_micro for s in self.segments + self.shared if not s.closed)

    def _telemetry(self, seconds: float) -> dict[str, TickTelemetry] | None:
        """The tick's GPU figures, or none: they come from the machines, and no figure of theirs may
        keep a tick from writing its cost or checking the budget."""
        if self.telemetry is None:
            return None
        try:
            return self.telemetry(seconds)
        except Exception:  # noqa: BLE001 — the row is written without utilisation instead
            return None

    def _accrue_shared(self, at: datetime, *, close: bool = False) -> int:
        if not self.shared:
            return 0
        from .attributed import accrue
        return accrue(self.shared, at, close=close)

    def tick(self, at: datetime | None = None) -> Verdict:
        """Append this tick's rows, refresh the month's spend by others, and evaluate the budget.

        A state database that cannot be reached for now (StateUnavailable) does not stop the meter:
        `reached` says so (False), the rows not written stay pending (the next write that succeeds
        covers the whole outage, so no time goes unbilled), the budget is evaluated from this run's
        own count and the monthly spend last read, and the ledger is tried again after RETRY_S.
        `reached`: True when this tick wrote or read the database, None when it had no need to."""
        at = at or self.clock()
        self.reached = None
        if self.retry_at is None or at >= self.retry_at:
            try:
                self._write(at)
            except StateUnavailable as exc:
                self.reached, self.unreachable, self.retry_at = False, exc, at + timedelta(seconds=RETRY_S)
            else:
                if self.reached:
                    self.unreachable = self.retry_at = None
        self.last_tick = at
        spent = self.spent_micro(at)
        verdict = Verdict("ok", None, spent, None, None)
        if self.policy is not None:
            verdict = self.policy.evaluate(spent, self.burn_micro_per_hour)
        if verdict.action != "stop" and self.idle is not None and self.latest_utilisations is not None:
            if self.idle.observe(at, self.latest_utilisations()):
                verdict = Verdict("stop", "idle", spent, None, None,
                                  f"GPUs below {self.idle.threshold:g} % for "
                                  f"{self.idle.window.total_seconds() / 60:g} minutes (idle policy)")
        if verdict.action == "stop" and self.stopped is None:
            self.stopped = verdict
        return verdict

    def _write(self, at: datetime) -> None:
        """This tick's ledger rows when due, and the month's spend by others: the state database."""
        if self.last_persist is None or (at - self.last_persist).total_seconds() >= self.persist_every_s:
            seconds = (at - self.last_persist).total_seconds() if self.last_persist else 0.0
            tel, end = self._telemetry(seconds), self.billable(at)
            self.run_spent_micro += self.ledger.append(self.segments, end, telemetry=tel)
            self.run_spent_micro += self._accrue_shared(end)
            self.last_persist = at
            self.reached = True
        if self.policy is not None and self.limits is not None and (self.limits.project_monthly or
                                                                    self.limits.user_monthly):
            self.policy.scopes = build_scopes(   # other runs this month keep spending too
                self.limits, project=self.project, user=self.user, ledger=self.ledger, now=at, run_id=self.run_id,
                lease_id=self.lease_id, reservations=self.reservations,
                lease_kept_since=self.policy.lease_kept_since,
                run_before_month_micro=self.spent_before_micro(month_start(at)))
            self.reached = True

    def spent_micro(self, at: datetime | None = None) -> int:
        return self.run_spent_micro + self.pending_micro(at or self.clock())

    def spent_before_micro(self, instant: datetime) -> int:
        """What this run's machines cost before `instant` (rounded as their rows are: each segment's
        cost is counted from its start), never more than the run has counted."""
        total = 0
        for seg in self.segments + self.shared:
            upto = min(instant, seg.last_end or seg.start) if seg.closed else instant
            if upto > seg.start:
                total += seg.cost_between(seg.start, upto)
        return total

    def remaining_micro(self, at: datetime | None = None) -> int | None:
        return None if self.policy is None else self.policy.remaining_micro(self.spent_micro(at))

    def exhausted_in_s(self, at: datetime | None = None) -> float | None:
        """Seconds until the budget runs out at the current burn rate (None: no budget)."""
        return seconds_until_exhausted(self.remaining_micro(at), self.burn_micro_per_hour)

    def deadline_s(self, proposed_s: float, max_left_s: float | None = None) -> int:
        """The heartbeat's extension for every machine, capped by when the budget runs out."""
        return capped_deadline_s(proposed_s, remaining_micro=self.remaining_micro(),
                                 burn_micro_per_hour=self.burn_micro_per_hour, max_left_s=max_left_s)

    def close_machines(self, machine_ids: set[str], at: datetime | None = None) -> int:
        """Close those machines' segments at `at` (released while the run goes on): their billing
        ends there and the burn rate drops. Returns the cost their last rows added."""
        at = self.billable(at or self.clock())
        ending = [s for s in self.segments if not s.closed and s.fixed["machine_id"] in machine_ids]
        shared = [s for s in self.shared if not s.closed and s.fixed["machine_id"] in machine_ids]
        added = self.ledger.close(ending, at) if ending else 0
        if shared:
            from .attributed import accrue
            added += accrue(shared, at, close=True)
        self.run_spent_micro += added
        return added

    def finish(self, at: datetime | None = None, *, kept=None) -> int:
        """Close every open segment (machines released, or `kept`: that lease's kept segments open
        at the same instant, fleet/money/kept.py). Returns the run's total in micro-dollars."""
        at = at or self.clock()
        seconds = (at - self.last_persist).total_seconds() if self.last_persist else 0.0
        tel = self._telemetry(seconds)
        at = self.billable(at)   # kept: the keep moved the deadline past `at` already
        if kept is not None:
            from .kept import hand_over
            self.run_spent_micro += hand_over(self.ledger, self.segments, kept, at, telemetry=tel)
        else:
            self.run_spent_micro += self.ledger.close(self.segments, at, telemetry=tel)
        self.run_spent_micro += self._accrue_shared(at, close=True)
        self.last_tick = self.last_persist = at
        return self.run_spent_micro
