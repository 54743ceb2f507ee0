"""What a CI job shows after a sweep: the sweep's own job summary (its verdict, cost, and every trial
with its parameters, metrics, state and cost) in $GITHUB_STEP_SUMMARY and runs/<sweep>/ci-summary.md,
the step outputs (sweep-id, status, exit-status, cost, outputs-dir), and no secret in any file the
trials left under runs/<sweep>/, which a job keeps as its artifact. The pool's run writes no report of
its own: it is the sweep's machinery, and its summary said "no metrics came back" of trials that had
written them.
"""
from __future__ import annotations

import os
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Mapping

from ..ci_report import publish
from ..render import RIGHT, Column, Document, Fields, Heading, Table
from ..render.markdown import code, escape, to_markdown
from .summary import SweepSummary

# By the exit code: a sweep "completed" with a failed trial exits 1, and is no success.
STOPPED_ICONS = {"budget-stopped": "💸", "cancelled": "⏹️"}
MAX_METRIC_COLUMNS = 8


def _usd(text: str | None) -> str:
    return "–" if not text else f"${Decimal(text):.4f}"


def sweep_document(summary: SweepSummary) -> Document:
    counts = ", ".join(f"{n} {state}" for state, n in summary.counts().items() if n)
    cost = summary.cost_usd or summary.would_cost_usd
    facts = [("Status", escape(f"{summary.status} (exit {summary.exit_code})")),
             ("Trials", escape(counts or "none")),
             ("Cost", (_usd(cost) + (" (would cost)" if summary.cost_usd is None and cost else ""))
              + (f" of a {_usd(summary.budget_usd)} budget" if summary.budget_usd else "")),
             ("Machines", f"{summary.machines}, leased once"),
             ("Command", code(summary.command))]
    if summary.message:
        facts.append(("Message", escape(summary.message)))
    params = list(dict.fromkeys(k for t in summary.trials for k in t.params))
    metrics = sorted({k for t in summary.trials for k in t.metrics})[:MAX_METRIC_COLUMNS]
    table = Table([Column("trial"), Column("state"), *(Column(p) for p in params),
                   *(Column(m, align=RIGHT) for m in metrics), Column("exit", align=RIGHT),
                   Column("cost", align=RIGHT), Column("run")],
                  [[t.trial, t.state, *(t.params.get(p, "") for p in params),
                    *(f"{t.metrics[m]:g}" if isinstance(t.metrics.get(m), (int, float)) else str(t.metrics.get(m, ""))
                      for m in metrics),
                    "" if t.exit_code is None else str(t.exit_code), _usd(t.cost_usd) if t.cost_usd else "",
                    t.run_id or ""] for t in summary.trials])
    icon = "✅" if summary.exit_code == 0 else STOPPED_ICONS.get(summary.status, "❌")
    return Document(f"{icon} fleet sweep {code(summary.sweep_id)}: "
                    f"{escape(summary.status)}", [Fields(facts, as_table=True), Heading("Trials", 4), table], level=3)


def report_sweep(summary: SweepSummary, config, environ: Mapping[str, str] | None = None) -> None:
    """Scrub the sweep's directory, then write its summary and step outputs (through the masker).
    A stop signal meanwhile is held off: this runs after the pool, where the CLI turns SIGTERM into
    KeyboardInterrupt, and a runner's second signal (GitHub: SIGTERM 7.5 s after its SIGINT) would
    cut the scrub short, the rest of the trials' files left with their secrets in the artifact."""
    import threading
    from .. import ci
    from ..run.signals import BetweenAttempts
    with BetweenAttempts(threading.Event()):
        _report(summary, config, os.environ if environ is None else environ)
    ci.reported(summary.sweep_id)


def _report(summary: SweepSummary, config, e: Mapping[str, str]) -> None:
    from ..masking import Masker
    mask = Masker.for_config(config)
    sweep_dir = Path(summary.run_dir)
    if mask and sweep_dir.is_dir():
        for path in sorted(sweep_dir.rglob("*")):
            try:
                mask.scrub_file(path)
            except OSError:   # a file a trial left unreadable, or the disk full: the rest still scrubbed
                pass
    if mask:   # rendering escapes & < | ` [, so a secret holding one is masked before it: the metric
        # names a trial chose (params and reasons are masked already)
        summary = replace(summary, trials=tuple(replace(t, metrics=mask.mask_obj(t.metrics)) for t in summary.trials))
    publish(mask(to_markdown(sweep_document(summary))) + "\n", {
        "sweep-id": summary.sweep_id, "status": summary.status, "exit-status": summary.exit_code,
        "cost": summary.cost_usd or summary.would_cost_usd or "",
        "outputs-dir": str(sweep_dir) if sweep_dir.is_dir() else ""}, sweep_dir, mask, e)
