"""Budgets in the run loop: the hook api.py calls (see fleet/run_context.py RunHook).

- before_lease: refuse before spending (unknown price under a budget; budget that cannot pay the
  minimum billing); under a monthly project/user budget the check and this lease's reservation are
  one locked transaction (fleet/budget_reservations.py), so concurrent commands on several laptops
  cannot both spend the last dollars; ask the agent for telemetry.
- on_tick (every second while setup/run execute) and deadline_cap_s (every heartbeat, so staging
  is covered too): accrue into the ledger, warn at 80 %, and at the crossing ask the run to stop
  with reason "budget" — api.py then sends SIGTERM, waits the grace period, fetches outputs,
  releases the machines and ends the run `budget-stopped` (exit 11).
- deadline_cap_s: each machine's on-board deadline is never later than the moment the budget runs
  out at the current burn rate, so a dead controller cannot overspend.
- after_run: close the ledger segments at release and settle the reservation (even when leasing
  failed); the run summary gets its cost.

"Crossing" is reached when what is left pays only for the grace period plus a small margin for
collecting outputs, so the graceful stop finishes inside the budget, not after it.
"""
from __future__ import annotations

import threading
from pathlib import Path

from .budget import IdlePolicy, format_usd, from_micro, resolve_price, seconds_until_exhausted, utc_clock
from .budget_reservations import Reservations
from .ledger import Ledger
from .metering import BudgetLimits, RunMeter, prepare_budget
from .telemetry import TelemetryFeed

TELEMETRY_INTERVAL_S = 5.0    # the agent samples this often
TELEMETRY_FETCH_S = 5.0       # and the controller brings the file home this often
PERSIST_EVERY_S = 10.0        # ledger rows at most this often (a crash loses at most this much)
BEAT_SLACK_S = 1.0            # a heartbeat reaches a machine up to this long after its cap is computed
STOP_MARGIN_S = 3.0           # beyond the grace period: one tick, collecting outputs, releasing


class BudgetHook:
    def __init__(self, config, clock=utc_clock):
        self.config = config
        self.clock = clock
        self.lock = threading.RLock()
        self.limits: BudgetLimits | None = None
        self.policy = None
        self.price = None
        self.idle: IdlePolicy | None = None
        self.meter: RunMeter | None = None
        self.feed: TelemetryFeed | None = None
        self.ledger: Ledger | None = None
        self.reservations: Reservations | None = None
        self.lease_id: str | None = None    # set once a reservation is committed for this lease
        self._fetcher: threading.Thread | None = None
        self._stop_fetch = threading.Event()
        self._warned_unpriced = False

    # -- before spending ---------------------------------------------------------------------------
    def before_lease(self, ctx) -> None:
        self.limits = BudgetLimits.from_config(self.config)
        self.ledger = Ledger(ctx.state.db, clock=self.clock)
        self.reservations = Reservations(ctx.state.db, clock=self.clock)
        self.policy, self.price = prepare_budget(self.limits, ctx.plan, ledger=self.ledger,
                                                 prices=self.config.prices, run_id=ctx.run_id,
                                                 reservations=self.reservations, lease_id=ctx.lease_id)
        if self.policy is not None and self.policy.reserved_micro:
            self.lease_id = ctx.lease_id
        if self.price is None:   # no budget: still record the price when one is known
            self.price = resolve_price(ctx.plan.template, self.config.prices, instance_type=ctx.plan.instance_type)
        if self.policy is not None:
            self.policy.grace_s = float(self.limits.grace_s) + STOP_MARGIN_S
        b = self.config.budgets
        if b.idle_gpu_percent and b.idle_minutes:
            self.idle = IdlePolicy(float(b.idle_gpu_percent), float(b.idle_minutes))
        ctx.plan.options.setdefault("telemetry_interval", TELEMETRY_INTERVAL_S)
        budget_s = self._exhausted_at_full_burn(ctx)
        if budget_s is not None:   # providers that tag an expiry (AWS fleet:expires-at) may cap it by this
            ctx.plan.options["budget_deadline_s"] = int(budget_s)
        if self.price is not None:
            # On the lease record before any machine exists: `fleet down` bills machines a killed
            # controller never reported at this price (fleet/unbilled.py).
            ctx.lease_meta["price"] = {"per_hour_micro": self.price.per_hour_micro, "source": self.price.source,
                                       "shadow": self.price.shadow}
            ctx.record["price"] = {"usd_per_machine_hour": str(from_micro(self.price.per_hour_micro)),
                                   "source": self.price.source, "shadow": self.price.shadow}
        if self.limits.any:
            ctx.record["budget"] = {"run_usd": None if self.limits.run is None else str(self.limits.run),
                                    "scopes": [s.name for s in self.policy.scopes]}
            if self.policy.reserved_micro:
                ctx.record["budget"]["reserved_usd"] = str(from_micro(self.policy.reserved_micro))

    # -- while machines live -----------------------------------------------------------------------
    def _meter(self) -> RunMeter:
        if self.meter is None:
            # Telemetry through self.feed, which exists once the whole lease does (_started).
            self.meter = RunMeter(self.ledger, self.policy, limits=self.limits, clock=self.clock, idle=self.idle,
                                  telemetry=lambda s: self.feed.tick(s) if self.feed is not None else None,
                                  latest_utilisations=lambda: (self.feed.latest_utilisations()
                                                               if self.feed is not None else []),
                                  persist_every_s=PERSIST_EVERY_S, reservations=self.reservations)
        return self.meter

    def _started(self, ctx) -> RunMeter | None:
        if self.feed is None and ctx.lease is not None and self.ledger is not None:
            tel_dir = Path(ctx.run_dir) / "telemetry"
            self.feed = TelemetryFeed({m.id: tel_dir / f"node-{m.node_rank}.jsonl" for m in ctx.lease.machines})
            # Money is spent from the moment the machines exist, not from the first tick; most
            # segments are open already (on_machine), this opens any the provider did not report.
            self._meter().start(ctx.lease, self.price, run_id=ctx.run_id, at=ctx.lease.created_at)
            if self.price is None and not self._warned_unpriced:
                self._warned_unpriced = True
                ctx.events.warn(f"template {ctx.plan.template.name!r} has no known price: its cost is recorded "
                                f"as $0 (set [prices] in fleet.toml)")
        return self.meter if self.feed is not None else None

    def _tick(self, ctx) -> None:
        meter = self._started(ctx)
        if meter is None or meter.stopped is not None and ctx.cancel.is_set():
            return
        verdict = meter.tick()
        if verdict.action == "warn":
            ctx.events.warn(verdict.message)
        elif verdict.action == "stop" and not ctx.cancel.is_set():
            ctx.events.warn(f"{verdict.message}: stopping the run")
            ctx.request_stop("budget", verdict.message)

    def after_lease(self, ctx) -> None:
        """Open the ledger segments as soon as the machines exist. Waiting for the first tick or
        heartbeat (after every machine answers SSH) lost the whole cost of a lease whose controller
        was killed while the machines booted (found by the fault matrix, tests/faults)."""
        with self.lock:
            self._started(ctx)

    def on_machine(self, ctx, machine) -> None:
        """A machine exists (the provider reports it from inside its lease call): its cost segment
        opens now, so a controller killed before lease() returns still leaves it on the ledger."""
        with self.lock:
            if self.ledger is None:
                return
            from .models import Lease
            now = self.clock()
            so_far = Lease(id=ctx.lease_id, provider=ctx.plan.provider, template=ctx.plan.template.name, machines=[],
                           created_at=now, deadline=now, max_deadline=now, project=ctx.plan.project,
                           user=ctx.plan.user)
            self._meter().open_machine(so_far, machine, self.price, run_id=ctx.run_id, at=now)

    def on_tick(self, ctx) -> None:
        with self.lock:
            self._start_fetcher(ctx)
            self._tick(ctx)

    def deadline_cap_s(self, ctx) -> float | None:
        with self.lock:
            if ctx.lease is None:   # before leasing: the whole lease burning from now
                return self._exhausted_at_full_burn(ctx)
            self._tick(ctx)
            left = None if self.meter is None else self.meter.exhausted_in_s()
            # The machine counts its deadline from when the beat arrives, a little after this.
            return None if left is None else max(0.0, left - BEAT_SLACK_S)

    def _exhausted_at_full_burn(self, ctx) -> float | None:
        if self.policy is None or self.price is None:
            return None
        return seconds_until_exhausted(self.policy.remaining_micro(0),
                                       self.price.per_hour_micro * ctx.plan.machine_count)

    # -- telemetry streamed home ---------------------------------------------------------------------
    def _start_fetcher(self, ctx) -> None:
        if self._fetcher is not None or ctx.lease is None:
            return
        self._fetcher = threading.Thread(target=self._fetch_loop, args=(ctx, list(ctx.lease.machines)),
                                         name="fleet-telemetry", daemon=True)
        self._fetcher.start()

    def _fetch_loop(self, ctx, machines) -> None:
        from .remote.ssh import connect
        offsets = {m.id: 0 for m in machines}
        sessions: dict = {}
        out_dir = Path(ctx.run_dir) / "telemetry"
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            while True:
                for m in machines:
                    try:
                        if m.id not in sessions:
                            session = connect(m, timeout=5)
                            sessions[m.id] = (session, session.sftp())
                        with sessions[m.id][1].open(f"{m.state_dir}/telemetry.jsonl", "rb") as f:
                            f.seek(offsets[m.id])
                            data = f.read()
                        end = data.rfind(b"\n") + 1          # whole lines only
                        if end:
                            with open(out_dir / f"node-{m.node_rank}.jsonl", "ab") as local:
                                local.write(data[:end])
                            offsets[m.id] += end
                    except FileNotFoundError:
                        continue
                    except Exception:  # noqa: BLE001 — telemetry never fails a run; retry next round
                        stale = sessions.pop(m.id, None)
                        if stale is not None:
                            stale[0].close()
                if self._stop_fetch.wait(TELEMETRY_FETCH_S):
                    return
        finally:
            for session, _ in sessions.values():
                session.close()

    # -- after release ---------------------------------------------------------------------------------
    def after_run(self, ctx, summary: dict) -> None:
        self._stop_fetch.set()
        with self.lock:
            if self.meter is None:
                self._settle(ctx, None)
                return
            total = self.meter.finish()
            self._settle(ctx, total)
            key = "would_cost_usd" if self.price is not None and self.price.shadow else "cost_usd"
            summary[key] = str(from_micro(total))
            if self.limits is not None and self.limits.run is not None:
                summary["budget_usd"] = str(self.limits.run)
            if self.meter.stopped is not None:
                summary["budget_stop"] = self.meter.stopped.message
            if self.feed is not None and self.feed.reasons():
                summary["telemetry_note"] = sorted(set(self.feed.reasons().values()))[0]
            ctx.record["cost"] = {key: summary[key], "total": format_usd(total)}
            try:   # keep the report's unsealed backlog small (rows older than the seal lag)
                from .report.rollup import seal
                seal(self.meter.ledger)
            except Exception as exc:  # noqa: BLE001 — a report seals them later anyway
                ctx.events.warn(f"could not seal ledger rows for reports: {exc}")
        if self._fetcher is not None:
            self._fetcher.join(timeout=10)

    def _settle(self, ctx, spent_micro: int | None) -> None:
        """The run is over: its reservation stops holding money (its cost is in the ledger now).
        A failure here only delays that until the lease is seen released, so it is a warning."""
        if self.reservations is None or self.lease_id is None:
            return
        try:
            self.reservations.settle(self.lease_id, spent_micro)
            self.lease_id = None
        except Exception as exc:  # noqa: BLE001 — the lease's status frees it anyway
            ctx.events.warn(f"could not settle the budget reservation of {self.lease_id}: {exc}")
