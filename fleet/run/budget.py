"""Budgets in a run: the gate before any money is spent, and the meter while machines live.

- `BudgetGate.grant(offer)` (stage "budget"): refuses before spending (unknown price under a
  budget; a budget that cannot pay the minimum billing); under a monthly project/user budget the
  check and this lease's reservation are one locked transaction (fleet/money/reservations.py), so
  concurrent commands on several laptops cannot both spend the last dollars. The result is a
  `BudgetGrant`: price, policy, reservation, and when the budget runs out at full burn.
- `RunBudget` (a typed collaborator of the pipeline, not a hook): opens each machine's ledger
  segment the moment the provider reports it; `tick` (every second while setup/run execute) and
  `deadline_cap_s` (every heartbeat, so staging is covered too) accrue into the ledger, warn at
  80 %, and at the crossing ask the run to stop with reason "budget" — the execute loop then sends
  SIGTERM, waits the grace period, outputs are fetched, machines released, and the run ends
  `budget-stopped` (exit 11). Each machine's on-board deadline is never later than the moment the
  budget runs out at the current burn rate, so a dead controller cannot overspend. `finish` closes
  the segments at release and settles the reservation (even when leasing failed): the run's `Cost`.

"Crossing" is reached when what is left pays only for the grace period plus a small margin for
collecting outputs, so the graceful stop finishes inside the budget, not after it.
"""
from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

from ..errors import StateUnavailable
from ..money.budget import IdlePolicy, resolve_price, seconds_until_exhausted, to_micro, utc_clock
from ..money.reservations import Reservations
from ..money.ledger import Ledger
from ..money.metering import BudgetLimits, RunMeter, prepare_budget
from ..models import Lease, Machine
from ..telemetry import TelemetryFeed
from .context import RunContext
from .state_outage import PROBE_PATIENCE_S, StateOutage, outage_bound_s
from .state_wait import at_once
from .types import BudgetGrant, Cost, Offer

PERSIST_EVERY_S = 10.0        # ledger rows at most this often (a crash loses at most this much)
KEEP_EVERY_S = 5.0            # the meter ticks at least this often from the lease to the release
BEAT_SLACK_S = 1.0            # a heartbeat reaches a machine up to this long after its cap is computed
STOP_MARGIN_S = 3.0           # beyond the grace period: one tick, collecting outputs, releasing
REREAD_DEADLINE_S = 1.0       # a deadline that passed under the meter is read from the state again this often


class BudgetGate:
    """Stage "budget": the one place a run's budget is read from config and money is reserved."""

    def __init__(self, config, state, clock=utc_clock):
        self.config, self.state, self.clock = config, state, clock

    def grant(self, offer: Offer, *, run_id: str, lease_id: str, kept: bool = False) -> BudgetGrant:
        limits = BudgetLimits.from_config(self.config)
        reservations = Reservations(self.state.db, clock=self.clock)
        now = self.clock()
        # A kept lease (`fleet run LEASE`) carries earlier runs' spend, which this run's budgets must
        # count; a lease made for this run (a handed one too: node 0's, a resumed attempt's) does not.
        kept_since = now if kept else None
        policy, price = prepare_budget(limits, offer, ledger=Ledger(self.state.db, clock=self.clock),
                                       prices=self.config.prices, now=now, run_id=run_id, reservations=reservations,
                                       lease_id=lease_id, lease_kept_since=kept_since)
        if price is None:   # no budget: still record the price when one is known
            price = resolve_price(offer.template, self.config.prices, instance_type=offer.instance_type)
        if policy is not None:
            policy.grace_s = float(limits.grace_s) + STOP_MARGIN_S
        b = self.config.budgets
        idle = IdlePolicy(float(b.idle_gpu_percent), float(b.idle_minutes)) \
            if b.idle_gpu_percent and b.idle_minutes else None
        exhausted = None
        if policy is not None and price is not None:
            # The machines' first deadline (the reaper's line should the controller die) counts the
            # most they can burn: a spot-priced mix's ceiling, the on-demand price spot may rise to or
            # fall back to. Later deadlines follow the meter's actual burn (RunMeter.capped_deadline_s).
            ceiling = getattr(offer.template, "price_ceiling_per_hour", None)
            if price.source == "fleet.toml [prices]":   # a fixed price: nothing to rise to
                ceiling = None
            per_machine = max(price.per_hour_micro, to_micro(ceiling) if ceiling is not None else 0)
            exhausted = seconds_until_exhausted(policy.remaining_micro(0), per_machine * offer.machine_count)
        return BudgetGrant(limits=limits, price=price, policy=policy,
                           reserved_micro=policy.reserved_micro if policy is not None else 0,
                           exhausted_in_s=exhausted, idle=idle, reserved_for_run=run_id)


class RunBudget:
    """The grant, metered while the machines live. Thread-safe: the heartbeat, the provider's
    lease threads and the execute loop all call in."""

    def __init__(self, grant: BudgetGrant, state, *, lease_id: str, run_dir: Path, clock=utc_clock,
                 attributed: bool = False):
        """`attributed`: another run (a sweep's warm pool) already meters these machines; this run's
        cost is computed the same way but appends no ledger rows (fleet/money/attributed.py)."""
        self.grant = grant
        self.clock = clock
        self.attributed = attributed
        self.lock = threading.RLock()
        if attributed:
            from ..money.attributed import AttributedLedger
            self.ledger: Ledger = AttributedLedger(state.db, clock=clock)
        else:
            self.ledger = Ledger(state.db, clock=clock)
        self.reservations = Reservations(state.db, clock=clock)
        self.reserved_lease = lease_id if grant.reserved_micro else None
        self.tel_dir = Path(run_dir) / "telemetry"
        self.meter: RunMeter | None = None
        self.feed: TelemetryFeed | None = None
        self._warned_unpriced = False
        self._keeping = threading.Event()          # set: the keeper thread stops
        self.outage = StateOutage(clock)
        self._keeper: threading.Thread | None = None
        self._lease: Lease | None = None   # the whole lease, once started: its deadline in the state
        self._ends_by = None        # the latest deadline the machines hold, as last heard (see _machines_end_by)
        self._reread_at = 0.0       # monotonic: when the state's copy of it may be read again

    def _meter(self) -> RunMeter:
        if self.meter is None:
            # Telemetry through self.feed, which exists once the whole lease does (start).
            self.meter = RunMeter(self.ledger, self.grant.policy, limits=self.grant.limits, clock=self.clock,
                                  idle=self.grant.idle,
                                  telemetry=lambda s: self.feed.tick(s) if self.feed is not None else None,
                                  latest_utilisations=lambda: (self.feed.latest_utilisations()
                                                               if self.feed is not None else []),
                                  persist_every_s=PERSIST_EVERY_S, reservations=self.reservations,
                                  ends_by=self._machines_end_by)
        return self.meter

    def machines_held_until(self, deadline) -> None:
        """A deadline the machines now hold (the heartbeat's confirmed one, the lease's, the state's),
        as the wall clock names it: brought onto the run's clock (fleet/clock.py) when that is steady."""
        from ..clock import SteadyClock
        if deadline is not None and isinstance(self.clock, SteadyClock):
            deadline = self.clock.from_wall(deadline)
        with self.lock:
            if deadline is not None and (self._ends_by is None or deadline > self._ends_by):
                self._ends_by = deadline

    def _machines_end_by(self, now):
        """The latest the machines can live, for the meter: none is billed past it. Once it has passed
        (the controller was stopped, suspended or asleep; or the machines were cut off) the state's copy
        is read again, at most once a second, in case `fleet extend` or `--keep` moved it from
        elsewhere; a state that does not answer leaves the last one heard (until the run's last rows, a
        later tick bills from the last row, so nothing is lost by waiting)."""
        if self._ends_by is None or self._lease is None or now <= self._ends_by or time.monotonic() < self._reread_at:
            return self._ends_by
        self._reread_at = time.monotonic() + REREAD_DEADLINE_S
        from ..money.kept import recorded_deadline
        try:
            with self.ledger.db.patience(PROBE_PATIENCE_S):
                self.machines_held_until(recorded_deadline(self.ledger, self._lease))
        except Exception:  # noqa: BLE001 — the meter goes on with the deadline it knows
            pass
        return self._ends_by

    # -- while machines are made and live ---------------------------------------------------------
    def open_machine(self, ctx: RunContext, machine: Machine) -> None:
        """A machine exists (the provider reports it from inside its lease call): its cost segment
        opens now, so a controller killed before lease() returns still leaves it on the ledger."""
        with self.lock:
            now = self.clock()
            so_far = Lease(id=ctx.lease_id, provider=ctx.offer.provider, template=ctx.offer.template.name,
                           machines=[], created_at=now, deadline=now, max_deadline=now, project=ctx.offer.project,
                           user=ctx.offer.user)
            self._meter().open_machine(so_far, machine, self.grant.price, run_id=ctx.run_id, at=now)

    def start(self, ctx: RunContext, lease: Lease, *, since=None, kept: bool = False) -> None:
        """The whole lease exists: open any segment the provider did not report, and read telemetry.
        `kept`: the lease was kept after an earlier run; its kept segments close at `since`.
        Before waiting for SSH: a controller killed while machines boot still leaves their cost on
        record for `fleet down` to close (found by the fault matrix, tests/faults)."""
        with self.lock:
            if self.feed is not None:
                return
            self.feed = TelemetryFeed({m.id: self.tel_dir / f"node-{m.node_rank}.jsonl" for m in lease.machines})
            with self.ledger.db.transaction():   # the lease's idle time ends where this run's begins
                paid: frozenset[str] = frozenset()
                if kept and not self.attributed:
                    from ..money.kept import close_kept
                    close_kept(self.ledger, lease, since or self.clock())
                    # What is still open after that is a live run's (close_kept ended the dead ones'):
                    # it bills those machines until it ends, when they pass to the lease's kept time.
                    paid = frozenset(seg.fixed["machine_id"] for seg in self.ledger.open_segments(lease.id)
                                     if seg.fixed.get("run_id") != ctx.run_id)
                self._meter().start(lease, self.grant.price, run_id=ctx.run_id, at=since or lease.created_at,
                                    paid_by_others=paid)
            self._lease = lease
            self.machines_held_until(lease.deadline)
            if not self.attributed:
                self._tick(ctx)          # rows now: machines reported long ago in leasing are not "silent"
                self._keep_ticking(ctx, lease.max_deadline)
            if self.grant.price is None and not self._warned_unpriced:
                self._warned_unpriced = True
                ctx.events.warn(f"template {ctx.offer.template.name!r} has no known price: its cost is recorded "
                                f"as $0 (set [prices] in fleet.toml)")

    def _keep_ticking(self, ctx: RunContext, until) -> None:
        """From the whole lease to the release the ledger gets a row at least every PERSIST_EVERY_S,
        whatever phase the run is in (staging on a kept lease has no heartbeat and no execute loop):
        rows older than that mean a dead controller to others' budget checks (money/stranded.py).
        `finish` stops it; the lease's max deadline does too (no machine lives past it), so a run
        whose record was never written cannot bill a released lease for ever."""
        def keep() -> None:
            while not self._keeping.wait(KEEP_EVERY_S) and (until is None or self.clock() < until):
                try:
                    self.tick(ctx)
                except Exception:  # noqa: BLE001 — the next tick (or the execute loop's) tries again
                    pass
        self._keeper = threading.Thread(target=keep, name="budget-keeper", daemon=True)
        self._keeper.start()

    def _stop_keeping(self) -> None:
        self._keeping.set()
        if self._keeper is not None and self._keeper is not threading.current_thread():
            self._keeper.join(timeout=30)

    def tick(self, ctx: RunContext) -> None:
        with self.lock:
            self._tick(ctx)

    def _tick(self, ctx: RunContext) -> None:
        meter = self.meter if self.feed is not None else None
        if meter is None:
            return
        began = self.clock()
        # An outage is probed briefly: a 30 s lock wait on every try stalls the execute loop and,
        # through self.lock, the heartbeat's cap.
        with self.ledger.db.patience(PROBE_PATIENCE_S) if self.outage.ongoing else contextlib.nullcontext():
            verdict = meter.tick()   # rows go on being written while a stopped run winds down
        policy = self.grant.policy
        bound = None if policy is None else outage_bound_s(ctx, policy.grace_s)
        if meter.reached is False and meter.unreachable is not None:
            self.outage.failed(ctx, began, meter.unreachable, bound)
        elif meter.reached:
            self.outage.reached(ctx)
        too_long = self.outage.outlasted(bound)
        if too_long and verdict.action != "stop" and not ctx.cancel.is_set():
            ctx.events.warn(f"{too_long}: stopping the run")
            ctx.request_stop("budget", too_long)
        if verdict.action == "warn":
            ctx.events.warn(verdict.message)
        elif verdict.action == "stop" and not ctx.cancel.is_set():
            ctx.events.warn(f"{verdict.message}: stopping the run")
            ctx.request_stop("budget", verdict.message)

    def remaining_micro(self) -> int | None:
        """What the run's budget has left now (None: no budget)."""
        with self.lock:
            if self.meter is not None:
                return self.meter.remaining_micro()
            policy = self.grant.policy
            return None if policy is None else policy.remaining_micro(0)

    def monthly_budget_spent(self) -> bool:
        """The meter stopped the run because a monthly budget (project or user) is spent: money no
        run of that scope may spend any more, unlike the run's own budget or idle GPUs."""
        with self.lock:
            stop = None if self.meter is None else self.meter.stopped
            return stop is not None and stop.scope not in (None, "run", "idle")

    def spent_micro(self) -> int:
        with self.lock:
            return 0 if self.meter is None else self.meter.spent_micro()

    def deadline_cap_s(self, ctx: RunContext) -> float | None:
        """Seconds the machines may still live on this budget (None: no cap)."""
        with self.lock:
            if self.feed is None:   # before leasing: the whole lease burning from now
                return self.grant.exhausted_in_s
            self._tick(ctx)
            left = None if self.meter is None else self.meter.exhausted_in_s()
            # The machine counts its deadline from when the beat arrives, a little after this.
            return None if left is None else max(0.0, left - BEAT_SLACK_S)

    def close_machines(self, machine_ids: set[str]) -> None:
        """Some machines were released while the run goes on (a sweep's pool giving back idle
        ones): their ledger segments close now, so they are billed up to their release only."""
        with self.lock:
            if self.meter is not None:
                self.meter.close_machines(set(machine_ids), self.clock())

    # -- after release ------------------------------------------------------------------------------
    def finish(self, ctx: RunContext, *, kept: Lease | None = None, at=None, wait=None) -> Cost | None:
        """Close the ledger segments (machines released) and settle the reservation. `kept`: the
        lease stays up; its kept segments open as the run's close (fleet/money/kept.py). None: no
        machine was ever metered (leasing failed before any existed). `at`: when the machines were
        released (a retry bills no further); `wait`: how the writes wait out an outage of the state
        database (fleet/run/state_wait.py); one that outlasts it raises StateUnavailable, and
        `counted` then has the cost."""
        self._stop_keeping()   # before the lock: the keeper takes it to tick
        wait = wait or at_once
        with self.lock:
            if self.meter is None:
                self._settle(ctx, None, wait)
                return None
            total = wait(lambda: self.meter.finish(at, kept=None if self.attributed else kept),
                         "the run's cost (its last ledger rows)")
            self._settle(ctx, total, wait)
            cost = self._cost(total)
            try:   # keep the report's unsealed backlog small (rows older than the seal lag)
                from ..report.rollup import seal
                seal(self.meter.ledger)
            except StateUnavailable:
                pass   # a report seals them later; the outage is for the run's end to report
            except Exception as exc:  # noqa: BLE001 — a report seals them later anyway
                ctx.events.warn(f"could not seal ledger rows for reports: {exc}")
            return cost

    def counted(self, at) -> Cost | None:
        """The run's cost up to `at` as counted in memory: what `finish` could not write."""
        with self.lock:
            return None if self.meter is None else self._cost(self.meter.spent_micro(at))

    def _cost(self, total: int) -> Cost:
        price = self.grant.price
        reasons = self.feed.reasons() if self.feed is not None else {}
        return Cost(total_micro=total, shadow=bool(price is not None and price.shadow),
                    budget_usd=self.grant.limits.run,
                    budget_stop=self.meter.stopped.message if self.meter and self.meter.stopped is not None else None,
                    telemetry_note=sorted(set(reasons.values()))[0] if reasons else None)

    def _settle(self, ctx: RunContext, spent_micro: int | None, wait=at_once) -> None:
        """The run is over: its reservation stops holding money (its cost is in the ledger now).
        A failure here only delays that until the lease is seen released, so it is a warning."""
        if self.reserved_lease is None:
            return
        try:
            wait(lambda: self.reservations.settle(self.reserved_lease, spent_micro, run_id=self.grant.reserved_for_run),
                 "the settling of its budget reservation")
            self.reserved_lease = None
        except Exception as exc:  # noqa: BLE001 — the lease's status frees it anyway
            ctx.events.warn(f"could not settle the budget reservation of {self.reserved_lease}: {exc}")
