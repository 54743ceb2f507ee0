"""The warm pool's queue: trials handed to free slots of machines, under the sweep's one budget.

A slot (fleet/sweep/slots.py: whole machines, or a share of one machine's GPUs) runs one trial at
a time and is reset between trials (fleet/sweep/reset.py). Before a trial starts, the budget must cover
what the machines in use may still cost at worst with it started: each machine that runs a trial is
billed whole (whatever share of its GPUs is busy) until its longest trial's timeout. A trial that
does not fit waits for a running one to finish, and once nothing runs and it still does not fit, it
and every trial after it are not started, with the figures that say why.

A slot with no trial to run (the queue is empty, or the trials left have waited `idle_release` on
the budget) retires while other trials still run; a machine whose slots have all retired is given
back at once (fleet/sweep/shrink.py), so the last trials do not keep idle machines billed.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import MachineUnreachable
from ..money.budget import cost_micro, format_usd
from ..run.context import Events, RunContext
from ..run.types import ExecResult, PinnedInputs
from .params import Trial
from .reset import reset_machine
from .retire import Retirements
from .shrink import PoolShrink
from .slots import Slot
from .spec import SweepSpec
from .summary import TrialResult
from .trial_env import TrialEnvironments, TrialMachines, env_paths
from .trials import SweepStop, run_trial

WAIT_S = 0.2
LIFE_MARGIN_S = 15.0      # a trial stopped this long before the pool's end still brings its outputs home


@dataclass
class _Running:
    trial: Trial
    started: float
    machines: tuple[str, ...]


class Scheduler:
    def __init__(self, spec: SweepSpec, *, provider, config, pins: PinnedInputs, events: Events, sweep_dir: Path,
                 environments: TrialEnvironments | None = None, on_progress: Callable[[], None] | None = None):
        self.spec, self.provider, self.config, self.pins, self.events = spec, provider, config, pins, events
        # Called from the execute loop, at most once a second, after trials ended (sweep.json so far).
        self.on_progress, self.progressed = on_progress, threading.Event()
        self.environments = environments or TrialEnvironments()   # the pool's, read beside its own probe
        self.sweep_dir = sweep_dir
        self.lock = threading.Lock()
        self.queue: deque[Trial] = deque(spec.trials)
        self.running: dict[str, _Running] = {}
        self.results: dict[str, TrialResult] = {}
        self.stop = SweepStop()
        self.resets_unclean: list[str] = []
        self.machines_out = Retirements()   # per machine: why the resets found it can run no more trials
        self.machine_micro = 0              # one machine's price per hour
        self.timeout_s = 0.0
        self.lost_slots = 0
        self.lost_why: list[str] = []       # per slot retired with trials left: what happened to its machines
        self.reset_why: dict[str, str] = {}   # run id -> why the reset after it failed (the latest try)
        self.slots: list[Slot] = []
        self.retired: set[int] = set()      # slots with no trial left to run (indexes into self.slots)
        self.shrink = PoolShrink(provider, events)

    # -- the pool's "execute" stage --------------------------------------------------------------------
    def run(self, ctx: RunContext, slots: list[Slot], on_tick: Callable[[], None] | None) -> ExecResult:
        timeout = self.spec.trial_timeout_s or ctx.offer.max_duration_s
        price = ctx.budget.grant.price if ctx.budget is not None else None
        self.machine_micro = price.per_hour_micro if price is not None else 0
        self.timeout_s = timeout
        self.events.phase("run", f"{len(self.spec.trials)} trial(s), {len(slots)} at once on "
                                 f"{len({m for s in slots for m in s.machine_ids})} machine(s)")
        self.slots = list(slots)
        workers = [threading.Thread(target=self._worker, args=(ctx, i, timeout), daemon=True,
                                    name=f"sweep-slot-{i}") for i in range(len(slots))]
        for w in workers:
            w.start()
        next_tick = time.monotonic()
        while any(w.is_alive() for w in workers):
            if time.monotonic() >= next_tick:
                if on_tick is not None:
                    on_tick()          # the pool's budget meter: the crossing stops the pool's ctx
                if self.on_progress is not None and self.progressed.is_set():
                    self.progressed.clear()
                    self.on_progress()
                next_tick += 1.0
            if ctx.cancel.is_set():
                why = (f"the sweep budget ran out: {ctx.stop_message}" if ctx.stop_reason == "budget" else
                       ctx.stop_message or "cancelled")
                self.stop.stop(ctx.stop_reason or "cancelled", why, hurry=ctx.hurry.is_set())
            time.sleep(0.05)
        if self.stop.message:
            self._not_started_rest(f"the sweep stopped first ({self.stop.message})")
        elif self.lost_slots:
            self._not_started_rest(f"no slot was left to run it ({self.lost_slots} of {len(slots)} retired: "
                                   + "; ".join(dict.fromkeys(self.lost_why)) + ")")
        else:
            self._not_started_rest("the sweep stopped first")
        failed = [r.trial for r in self.results.values() if r.state in ("failed", "error")]
        return ExecResult(1 if failed else 0, failed[0] if failed else None)

    def _worker(self, ctx: RunContext, index: int, timeout: float) -> None:
        slot = self.slots[index]
        pending: list[threading.Thread] = []     # the last trial's reset, still under way
        try:
            self._trials_on(ctx, index, slot, timeout, pending)
        finally:
            for thread in pending:               # the slot's machines are clean before it retires
                thread.join()

    def _trials_on(self, ctx: RunContext, index: int, slot: Slot, timeout: float,
                   pending: list[threading.Thread]) -> None:
        reset_ok: dict[str, bool] = {}           # run id -> whether the reset after it reached the machines
        previous: str | None = None              # the trial whose reset is still in `pending`
        while True:
            trial = self._next(ctx, slot)
            if trial is None:
                for thread in pending:
                    thread.join()
                pending.clear()
                self._retire(ctx, index)
                return
            run_dir = self.sweep_dir / trial.name
            trial_timeout = min(timeout, max(1.0, self._pool_life_s(ctx) - LIFE_MARGIN_S))
            early: dict[str, threading.Thread] = {}

            def reset_after_collect(run_id: str) -> None:
                """The trial's outputs are home: its machines are reset now, while the controller
                writes its record and the next trial's run begins (TrialMachines waits for it
                before that trial reads the environment or starts its command). Not for a trial
                refused the slot: it never ran there, and the reset raced the slot's release."""
                if self.stop.hurry or refused:
                    return
                early[run_id] = threading.Thread(
                    target=lambda: reset_ok.__setitem__(run_id, self._reset(ctx, slot, run_id)),
                    name=f"sweep-reset-{index}", daemon=True)
                early[run_id].start()

            refused: list[str] = []              # why the slot was not clean for this trial

            def last_reset_done(before=tuple(pending)) -> None:
                for thread in before:
                    thread.join()

            def ready(after=previous) -> None:
                """Before the trial reads the machines or starts its command: the last reset is over
                and reached the machines. One that did not is tried once more (a passing hiccup), for
                the trial it was meant for; if that fails too, the trial does not start beside what
                the last one left (and its error retires the slot)."""
                last_reset_done()
                out = self.machines_out.of(slot.machine_ids)
                if out is not None:
                    refused.append(out.lost)
                    raise MachineUnreachable(f"machines {slot.label}{out.refused}")
                state = True if after is None else reset_ok.get(after, True)   # no early reset: none to doubt
                if state is False:                 # tried again once (None: failed twice), whichever caller is first
                    state = reset_ok[after] = self._reset(ctx, slot, after) or None
                if state is None:
                    why = self.reset_why.get(after)
                    refused.append(f"could not be reset after {after}" + (f" ({why})" if why else ""))
                    raise MachineUnreachable(f"machines {slot.label} could not be reset after {after}: "
                                             "not starting beside what it left")
            pending.clear()
            result = run_trial(config=self.config, provider=self.provider, lease=ctx.lease, slot=slot,
                               pins=self.pins, trial=trial, command=self.spec.trial_command(trial), sweep_id=self.spec.sweep_id,
                               pool_run_id=ctx.run_id, run_dir=run_dir, timeout_s=trial_timeout, sweep_stop=self.stop,
                               events=self.events, stop_rule=self.spec.stop_if,
                               machines=TrialMachines(self.environments, after_collect=reset_after_collect,
                                                      reset_done=ready))
            last_reset_done()      # a trial that ended before its command still leaves the slot clean
            if refused:            # it never started: another slot runs it; this one is not clean
                with self.lock:
                    self.running.pop(trial.name, None)
                    self.queue.appendleft(trial)
                    self.lost_slots += 1
                    self.lost_why.append(f"machines {slot.label} {refused[0]}")
                self.events.warn(f"machines {slot.label} {refused[0]}: no more trials on them; {trial.name} goes "
                                 "back to the queue")
                self._retire(ctx, index)
                return
            self.events.phase("trial", f"{trial.name} {result.state}"
                                       + (f" (exit {result.exit_code})" if result.state == "failed" else "")
                                       + (f": {result.reason}" if result.reason and result.state != "failed" else ""))
            if result.run_id in early and result.state != "error":
                pending.append(early[result.run_id])   # joined by the next trial before its command
                previous, usable = result.run_id, True
            else:
                previous = None
                for thread in early.values():
                    thread.join()
                if result.run_id in reset_ok:
                    usable = reset_ok[result.run_id]
                else:
                    usable = self._reset(ctx, slot, result.run_id) if result.run_id and not self.stop.hurry else True
            with self.lock:
                self.results[trial.name] = result
                self.running.pop(trial.name, None)
            self.progressed.set()
            if result.state == "error" and not usable:
                # The machines are gone (lost, released from outside): no more trials on them; the
                # other slots go on, and what no slot is left for is listed as not started.
                self.events.warn(f"machines {slot.label} no longer answer: no more trials on them")
                with self.lock:
                    self.lost_slots += 1
                    self.lost_why.append(f"machines {slot.label} no longer answer")
                self._retire(ctx, index)       # its other machines (and the dead one) are given back
                return

    def _reset(self, ctx: RunContext, slot: Slot, run_id: str) -> bool:
        """Clean the slot's machines for the next trial; False when they could not be reached, or a
        reset there could not confirm it left them clean (a process of the trial that would not end,
        its outputs not removable, the reset itself failing): the next trial tries once more, and
        does not start there if that fails too."""
        from ..parallel import parallel
        machines = [m for m in ctx.lease.machines if m.id in slot.machine_ids]
        # Unknown until this reset says: the next trial probes unless it does (trial_env.py).
        tokens = {m.id: self.environments.resetting(m.id, run_id) for m in machines}
        unclean = 0
        try:
            for got in parallel(machines, lambda m: reset_machine(m, run_id, slot.leaf, env_paths(ctx.lease, m),
                                                                   self.environments.agent.get(m.id))):
                self.environments.saw(got.machine_id, got.env_state, tokens.get(got.machine_id))
                for warning in self.machines_out.found(self.environments, got, run_id):
                    self.events.warn(warning)
                if got.ended:   # said, not silent: a trial that daemonises also ran past its own end
                    self.events.warn(f"machine {got.machine_id}: {run_id} left {got.ended} process(es) running "
                                     "after its command ended; the reset ended them")
                if not got.clean:
                    # Once only warned: the next trial then ran beside what the reset could not end
                    # or remove (a tmpfs mounted in its outputs kept it from being removed).
                    unclean += 1
                    self.resets_unclean.append(got.machine_id)
                    self.events.warn(f"machine {got.machine_id}: could not confirm the reset after {run_id}")
                    self.reset_why[run_id] = f"machine {got.machine_id}: could not confirm it left it clean"
        except Exception as exc:  # noqa: BLE001 — the next trial's own run reports a broken machine
            self.events.warn(f"could not reset machines {slot.label} after {run_id}: {exc}")
            self.reset_why[run_id] = str(exc)
            return False
        return not unclean

    def _retire(self, ctx: RunContext, index: int) -> None:
        """The slot has no trial to run: give back each of its machines none of whose slots has one,
        while trials still run elsewhere (when none runs, the pool's own release follows at once;
        a stopping sweep releases everything together)."""
        with self.lock:
            if ctx.cancel.is_set() or self.stop.reason is not None:
                return
            self.retired.add(index)
            if not self.running:
                return
            idle = [mid for mid in self.slots[index].machine_ids
                    if all(j in self.retired for j, s in enumerate(self.slots) if mid in s.machine_ids)]
        if idle:
            why = "no trial left for them" if not self.queue else \
                f"idle {self.spec.idle_release_s:g}s while the trials left wait on the budget (--idle-release)"
            self.shrink.release_soon(ctx, idle, why)

    # -- which trial next, under the budget ----------------------------------------------------------
    def _committed(self, new: Slot, life_s: float = float("inf")) -> int:
        """What the machines in use may still cost at worst once a trial starts on `new`: each machine
        running a trial is billed whole until the longest of its trials reaches its timeout (or the
        pool's machines end, `life_s` from now, whichever comes first)."""
        now = time.monotonic()
        left_s: dict[str, float] = {m: self.timeout_s for m in new.machine_ids}
        for r in self.running.values():
            for m in r.machines:
                left_s[m] = max(left_s.get(m, 0.0), self.timeout_s - (now - r.started))
        return sum(cost_micro(self.machine_micro, max(0.0, min(s, life_s))) for s in left_s.values())

    def _next(self, ctx: RunContext, slot: Slot) -> Trial | None:
        idle_since = time.monotonic()
        while True:
            with self.lock:
                if ctx.cancel.is_set() or not self.queue:
                    return None
                life = self._pool_life_s(ctx)
                if self.spec.trial_timeout_s is not None and life < self.spec.trial_timeout_s:
                    self._not_started_rest(
                        f"the pool's machines end in {life:.0f}s (max_duration), before a trial's timeout "
                        f"({self.spec.trial_timeout_s}s) could pass; raise --max-duration for the sweep")
                    return None
                left = ctx.budget.remaining_micro() if ctx.budget is not None else None
                if left is None:
                    return self._start(self.queue.popleft(), slot)
                need = self._committed(slot, life)
                if left >= need:
                    return self._start(self.queue.popleft(), slot)
                if not self.running:
                    self._not_started_rest(self._why_not(left, need, ctx))
                    return None
                if time.monotonic() - idle_since >= self.spec.idle_release_s:
                    return None   # waited long enough on the budget: the slot retires (_retire)
            time.sleep(WAIT_S)

    @staticmethod
    def _pool_life_s(ctx: RunContext) -> float:
        """Seconds the pool's machines may still live (their hard max deadline, max_duration)."""
        from ..models import utcnow
        if ctx.lease is None:
            return float("inf")
        return (ctx.lease.max_deadline - utcnow()).total_seconds()

    def _start(self, trial: Trial, slot: Slot) -> Trial:
        self.running[trial.name] = _Running(trial, time.monotonic(), slot.machine_ids)
        return trial

    def _why_not(self, left: int, worst: int, ctx: RunContext) -> str:
        timeout = self.spec.trial_timeout_s or ctx.offer.max_duration_s
        spent = ctx.budget.spent_micro() if ctx.budget is not None else 0
        return (f"the sweep budget has {format_usd(max(left, 0))} left ({format_usd(spent)} spent); one trial "
                f"may cost up to {format_usd(worst)} (its machines for the trial timeout, {timeout}s)")

    def _not_started_rest(self, reason: str) -> None:
        while self.queue:
            trial = self.queue.popleft()
            self.results[trial.name] = TrialResult(trial=trial.name, index=trial.index, params=trial.values,
                                                   state="not-started", reason=reason)

    def ordered_results(self, unended: str = "the sweep ended before it started") -> tuple[TrialResult, ...]:
        with self.lock:
            results = dict(self.results)
        return tuple(results.get(trial.name) or TrialResult(trial=trial.name, index=trial.index, params=trial.values,
                                                            state="not-started", reason=unended)
                     for trial in self.spec.trials)
