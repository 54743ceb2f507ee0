"""Stage "record", after the release: the run's cost, its summary, its record, its final state.

Each write to the state database waits out an outage (fleet/run/state_wait.py). One that never
gets through leaves the run `running` and its ledger short in the state; summary.json then still
has the run's outcome, says what the state lacks (`unrecorded`), and the run raises one
StateUnavailable line saying where the machines are and where that summary is.
"""
from __future__ import annotations

from datetime import timedelta

from typing import Any

from ..errors import StateUnavailable
from ..masking import Masker
from ..models import Lease, to_jsonable, utcnow
from .context import RunContext
from .execute import with_outputs_incomplete
from .record import write_record
from .state_wait import StateWait
from .summary import LaunchedMachine, RunSummary
from .types import Collected, Cost, PinnedInputs, RecordRef, Released


def record_run(ctx: RunContext, budget, pins: PinnedInputs, lease: Lease | None, outcome: Any,
               collected: Collected | None, released: Released, *, inputs, environment, fresh: bool) -> RunSummary:
    wait = ctx.state_wait or StateWait(ctx.state.db, ctx.events)
    # Machines not released (kept, or a release that failed) live on to their deadline: billed as kept.
    still_up = lease is not None and not released.released
    # The release: the machines were gone before the release's own state write waited out an
    # outage, and a write retried later bills no further.
    at = budget.clock() - timedelta(seconds=wait.slept_s)
    try:
        cost = budget.finish(ctx, kept=lease if still_up else None, at=at, wait=wait)
    except StateUnavailable:
        cost = budget.counted(at)
    ended = utcnow()
    summary = assemble(ctx, lease, outcome, collected, released, cost, ended)
    if ctx.options.resume is not None and ctx.options.resume.previous:   # recovery: every attempt, this one last
        from .recovery import attempt_row
        summary = summary.updated(attempts=[*ctx.options.resume.previous, attempt_row(ctx.attempt, summary)])
    try:   # never raises: a failure here must not stop the release or hide the run's own result
        # Hurried (a cancelled CI job's second signal, its SIGKILL seconds away): the outputs stay in
        # the run directory, and the record and summary are written now rather than after hashing them.
        output_id = (inputs.snapshot_outputs(ctx.run_dir) if (fresh or pins.pinned) and not ctx.hurry.is_set()
                     else None)
        summary = summary.updated(output_snapshot=output_id)
        captured = environment.captured
        if captured is not None and captured.pinned_from:
            summary = summary.updated(environment_differences=list(captured.differences))
        ref: RecordRef = wait(lambda: write_record(ctx, pins, summary, captured), "the run record")
        summary = summary.updated(record_hash=ref.hash)
    except Exception as exc:  # noqa: BLE001
        ctx.events.warn(f"could not write the run record for {ctx.run_id}: {exc}")
    redact = Masker.for_config(ctx.config).redacting()   # no secret value reaches the state or summary.json
    summary = RunSummary.from_json(redact.mask_obj(_noted(summary, wait).to_json()))
    try:
        wait(lambda: ctx.state.finish_run(ctx.run_id, summary.status, summary.exit_code,
                                          {"summary": summary.to_json()}, masker=redact),
             "the run's end (it shows as running)")
    except StateUnavailable:
        summary = _noted(summary, wait)
    try:   # the state has it: a full disk here must not end the run in a traceback
        path = summary.write(ctx.run_dir)
    except OSError as exc:
        ctx.events.warn(f"could not write {ctx.run_dir / 'summary.json'}: {exc}")
        path = None
    if summary.unrecorded:
        raise _unrecorded(ctx, summary, released, wait.failed, path)
    return summary


def _noted(summary: RunSummary, wait: StateWait) -> RunSummary:
    if not wait.gave_up:
        return summary
    return summary.updated(unrecorded=f"the state database could not record {', '.join(wait.gave_up)} "
                                      f"({wait.failed.message}): this summary has the run's outcome, and its "
                                      "cost as the run counted it")


def _unrecorded(ctx: RunContext, summary: RunSummary, released: Released, failed: StateUnavailable,
                path) -> StateUnavailable:
    hint = None
    if released.released:
        machines = f"its machines were released (lease {ctx.lease_id})"
        hint = f"once the database answers, `fleet down {ctx.lease_id}` records the release and ends the run"
    elif released.kept_until:
        machines = f"lease {ctx.lease_id} is kept until {released.kept_until}"
    else:
        machines = f"lease {ctx.lease_id}'s machines end at their deadline (`fleet down {ctx.lease_id}`)"
    where = f"its outcome is in {path}" if path is not None else "summary.json could not be written either"
    lacking = ", ".join((ctx.state_wait.gave_up if ctx.state_wait is not None else []) or ["it"])
    return StateUnavailable(f"run {ctx.run_id} ended {summary.status} (exit {summary.exit_code}) and {machines}, "
                            f"but the state database could not record {lacking} ({failed.message}): {where}",
                            hint=hint)


def assemble(ctx: RunContext, lease: Lease | None, outcome: Any, collected: Collected | None,
             released: Released, cost: Cost | None, ended) -> RunSummary:
    offer = ctx.offer
    outcome = with_outputs_incomplete(outcome, collected)
    amount = None if cost is None else str(cost.usd)
    ci = None
    if ctx.options.ci:
        from ..ci import detect_context
        ci = detect_context() or None
    return RunSummary(
        run_id=ctx.run_id, lease_id=ctx.lease_id, status=outcome.status, exit_code=int(outcome.exit_code),
        provider=offer.provider, template=offer.template.name, gpus=offer.gpus,
        # Machines a sweep's pool gave back early (fleet/sweep/shrink.py) were leased and billed too.
        machines=len(lease.machines) + len(ctx.released_early) if lease is not None else offer.machine_count,
        simulated_gpus=offer.template.simulated_gpus, run_dir=str(ctx.run_dir),
        started_at=to_jsonable(ctx.started_at), ended_at=to_jsonable(ended),
        duration_s=round((ended - ctx.started_at).total_seconds(), 3), released=released.released,
        failing_rank=outcome.failing_rank, message=outcome.message,
        outputs_fetched=None if collected is None else collected.files, kept_until=released.kept_until,
        outputs_symlinks=collected.symlinks or None if collected is not None else None,
        outputs_skipped=list(collected.skipped) or None if collected is not None else None,
        outputs_incomplete=list(collected.incomplete) or None if collected is not None else None,
        cost_usd=amount if cost is not None and not cost.shadow else None,
        would_cost_usd=amount if cost is not None and cost.shadow else None,
        budget_usd=None if cost is None or cost.budget_usd is None else str(cost.budget_usd),
        budget_stop=None if cost is None else cost.budget_stop,
        telemetry_note=None if cost is None else cost.telemetry_note, ci=ci,
        rerun_of=ctx.options.rerun_of.run_id if ctx.options.rerun_of else None,
        attempt=ctx.attempt if ctx.attempt > 1 else None, machines_lost=outcome.machines_lost or None,
        checkpoints={str(c.node_rank): c.snapshot_id for c in ctx.checkpoints} or None,
        gpu_type=str(offer.gpu_type) if offer.gpu_type is not None else None,
        rank_exit_codes=dict(outcome.rank_exit_codes) or None,
        launched=[LaunchedMachine.of(m) for m in sorted(lease.machines, key=lambda m: m.node_rank)]
        if lease is not None and lease.machines else None)
