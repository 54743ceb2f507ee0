"""Interruption recovery: a run whose machines were lost resumes on new machines from its last
checkpoint, within its one budget and `max_restarts`.

Each attempt is one pass of the run pipeline (pipeline.up: lease, checkpoint restore, stage,
setup, execute, collect, release, record), so every guarantee of a run holds per attempt: the
machines of a lost attempt are released and billed before the next is leased. Attempt N>1 has the
run id `<run>-a<N>`, gets each node's latest checkpoint restored (FLEET_RESUMED=1,
FLEET_ATTEMPT=N), and may spend only what the earlier attempts left of the run's budget: a restart
the rest cannot pay is not started, and the run ends `budget-stopped` with its last checkpoint in
the store. The summary of the last attempt lists every attempt.

`recovery` (fleet.toml): "spot" resumes only when a lost machine was a spot machine (a spot
interruption), "always" after any loss (host failure, a machine that vanished), "never" not at all.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import replace
from decimal import Decimal
from typing import Any, Callable

from ..config.model import Config
from ..errors import BudgetRefused, Cancelled, ExitCode, FleetError
from ..ids import new_run_id
from ..models import Machine
from .checkpoints import Resume, latest_snapshots
from .context import Events, checked_events
from .signals import BetweenAttempts
from .summary import RunSummary
from .types import RunOptions


def recoverable(config: Config, machine: Machine) -> bool:
    """May the loss of this machine be recovered from (config `recovery`)?"""
    mode = getattr(config, "recovery", "never")
    return mode == "always" or (mode == "spot" and bool(machine.spot))


def _lost_spot(summary: RunSummary) -> bool:
    return any(m.lifecycle == "spot" for m in summary.launched or [])


def _should_resume(config: Config, summary: RunSummary) -> bool:
    if not summary.machines_lost or summary.status != "error":
        return False
    return mode_refusal(config, spot_lost=_lost_spot(summary)) is None


def mode_refusal(config: Config, *, spot_lost: bool) -> str | None:
    """Why `recovery` does not resume a run after this loss; None: it does."""
    if config.recovery == "always" or (config.recovery == "spot" and spot_lost):
        return None
    if config.recovery == "spot":
        return 'recovery = "spot" and the lost machines were not spot machines'
    return f'recovery = "{config.recovery}"'


def restarts_refusal(config: Config, attempts: int) -> str | None:
    """Why no attempt may follow `attempts` attempts (max_restarts used up); None: one may."""
    if attempts > config.max_restarts:
        return (f"max_restarts ({config.max_restarts}) is used up after {attempts} "
                f"attempt{'' if attempts == 1 else 's'}")
    return None


def budget_left(config: Config, spent: Decimal, attempts: int) -> Decimal | None:
    """What the earlier attempts (`spent` by `attempts` of them) left of the run's budget for the
    next one (None: no budget); BudgetRefused when nothing is left. The budget gate then refuses
    a restart the rest cannot pay at the plan's price."""
    if config.budget is None:
        return None
    left = config.budget - spent
    if left <= 0:
        raise BudgetRefused(f"the run's budget ${config.budget} is spent (${spent} by {attempts} attempt(s))")
    return left


def prior_spent(resume: Resume | None) -> Decimal:
    """What the attempts before this process's first (a resume that continues the same run) cost."""
    return sum((Decimal(row.get("cost_usd") or 0) for row in (resume.previous if resume else ())), Decimal(0))


def _cost(summary: RunSummary) -> Decimal:
    amount = summary.cost_usd if summary.cost_usd is not None else summary.would_cost_usd
    return Decimal(amount or 0)


def attempt_row(n: int, s: RunSummary) -> dict[str, Any]:
    """One attempt as the summary and the run record list it."""
    return {"attempt": n, "run_id": s.run_id, "lease_id": s.lease_id, "status": s.status,
            "exit_code": s.exit_code, "started_at": s.started_at, "ended_at": s.ended_at,
            "cost_usd": s.cost, "machines_lost": bool(s.machines_lost), "message": s.message}


def run_managed(config: Config, *, options: RunOptions | None = None, events: Events | None = None,
                run: Callable[..., RunSummary] | None = None) -> RunSummary:
    """`fleet up` with recovery: attempts until one ends on its own, the budget cannot pay the
    next, or max_restarts are used up. `run` is pipeline.up (tests pass their own)."""
    from .pipeline import up
    run = run or up
    events = checked_events(events)
    options = options or RunOptions()
    base = options.run_id or new_run_id()
    attempt = options.resume.attempt if options.resume else 1
    resume = options.resume
    # A resume that continues the same run (the reaper's, after node 0 vanished): its earlier
    # attempts count against max_restarts and the budget, and this one is `<run>-aN` as theirs were.
    prior = tuple(resume.previous) if resume else ()
    attempts: list[tuple[int, RunSummary]] = []
    spent = prior_spent(resume)
    options = replace(options, stop_asked=options.stop_asked or threading.Event())
    user_stop = options.stop_asked
    # Installed once the first attempt returned, never before: until then a stop signal keeps its
    # usual effect (Ctrl-C at the confirmation prompt, while pinning) and the first run's own handlers.
    # A detached supervisor has no prompt: from its start, so that no gap between the first run's
    # handlers and these leaves SIGTERM its default (dying with the run unrecorded).
    with contextlib.ExitStack() as between:
        if options.detached:
            between.enter_context(BetweenAttempts(user_stop))
        while True:
            if attempts and user_stop.is_set():     # asked to stop between two attempts: nothing more is leased
                return _stopped(config, attempts, prior)
            run_id = base if not attempts and not prior else f"{base}-a{attempt}"
            try:
                budget = budget_left(config, spent, len(prior) + len(attempts))
                summary = run(config if budget is None else replace(config, budget=budget), events=events,
                              options=replace(options, run_id=run_id, resume=resume))
            except BudgetRefused as exc:
                if not attempts:
                    raise
                last = attempts[-1][1]
                _link(last.run_id, None, config)
                return _final(config, attempts, prior, status="budget-stopped", exit_code=ExitCode.BUDGET_STOPPED,
                              message=f"not resumed after attempt {len(attempts)}: {exc.one_line()}; its last "
                                      "checkpoint is in the store (`fleet up --resume " + last.run_id + "`)")
            except FleetError as exc:
                if not attempts:
                    raise
                # No replacement could be had (every other team host busy or down, no capacity): the run
                # ends here with its verdict, and followers waiting for the next attempt are told now.
                last = attempts[-1][1]
                _link(last.run_id, None, config)
                cancelled = isinstance(exc, Cancelled)
                return _final(config, attempts, prior, status="cancelled" if cancelled else "error", exit_code=exc.exit_code,
                              message=f"machines lost ({last.message}) and not resumed after attempt {len(attempts)}: "
                                      f"{exc.one_line()}; "
                                      f"its last checkpoint is in the store (`fleet up --resume {last.run_id}`)")
            attempts.append((attempt, summary))
            if len(attempts) == 1 and not options.detached:
                between.enter_context(BetweenAttempts(user_stop))
            spent += _cost(summary)
            used_up = restarts_refusal(config, len(prior) + len(attempts))
            if not _should_resume(config, summary) or used_up:
                if summary.machines_lost:
                    _link(summary.run_id, None, config)   # followers stop here: no attempt follows
            if not _should_resume(config, summary):
                return _final(config, attempts, prior) if len(prior) + len(attempts) > 1 else summary
            if user_stop.is_set():             # lost, but the user had asked it to stop: never new machines
                return _stopped(config, attempts, prior)
            if used_up:
                return _final(config, attempts, prior, status="failed", exit_code=ExitCode.INFRASTRUCTURE,
                              message=f"machines lost again and {used_up}: {summary.message}")
            ranks = sorted(int(r) for r in (summary.checkpoints or {})) or list(range(summary.machines))
            from ..snapshots import open_store
            found = latest_snapshots(open_store(config.store), summary.run_id, ranks)
            resume = Resume(attempt=attempt + 1, snapshots={**(resume.snapshots if resume else {}), **found},
                            of_run=summary.run_id, previous=(*prior, *(attempt_row(n, s) for n, s in attempts)))
            attempt += 1
            _link(summary.run_id, f"{base}-a{attempt}", config)
            events.phase("recover", f"{summary.message}; resuming on new machines from the last checkpoint "
                                    f"(attempt {attempt} of at most {config.max_restarts + 1})")


def _stopped(config: Config, attempts: list[tuple[int, RunSummary]], prior: tuple[dict, ...]) -> RunSummary:
    last = attempts[-1][1]
    _link(last.run_id, None, config)           # followers stop here: no attempt follows
    return _final(config, attempts, prior, status="cancelled", exit_code=ExitCode.CANCELLED,
                  message=f"machines lost ({last.message}) and not resumed: the run was asked to stop; its "
                          f"last checkpoint is in the store (`fleet up --resume {last.run_id}`)")


def _final(config: Config, attempts: list[tuple[int, RunSummary]], prior: tuple[dict, ...] = (), *,
           status: str | None = None, exit_code: int | None = None, message: str | None = None) -> RunSummary:
    last = attempts[-1][1]
    rows = [*prior, *(attempt_row(n, s) for n, s in attempts)]
    final = last.updated(attempts=rows, status=status or last.status,
                         exit_code=last.exit_code if exit_code is None else int(exit_code),
                         message=message if message is not None else last.message)
    _store_final(final, config)
    return final


def _store_final(summary: RunSummary, config: Config) -> None:
    """The last attempt's summary.json and state row get the attempt list (and the verdict)."""
    try:
        summary.write()
        from ..state import open_state
        open_state(config.state_url).finish_run(summary.run_id, summary.status, summary.exit_code, {"summary": summary.to_json()})
    except Exception:  # noqa: BLE001 — the attempts' own records are written; this is the overview
        pass


def _link(run_id: str, next_run_id: str | None, config: Config) -> None:
    """The ended attempt names the next one (None: there is none): `fleet attach` and `fleet logs -f`
    of a run that lost its machines wait for this answer, then follow the next attempt or stop."""
    from ..errors import FleetError
    from ..state import open_state
    try:
        state = open_state(config.state_url)
        row = state.get_run(run_id)
        state.finish_run(run_id, row["status"], row["exit_code"], {"next_attempt": next_run_id})
    except FleetError:
        pass   # followers then stop at the ended attempt; the run itself goes on
