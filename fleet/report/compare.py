"""Runs side by side: parameters, code commit, data snapshots, cost, GPU-hours and metrics, best
first, and which inputs differ between them (`fleet runs compare`).

Metrics are the flat numbers of `metrics.json` an experiment writes under FLEET_OUTPUT_DIR (node 0,
or rank 0 with per_gpu): they come home with the outputs, so they are in the run's output snapshot
and its record. Parameters are a sweep trial's FLEET_PARAM_* values, as recorded in the run's env.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from ..errors import NotFound, UsageError
from ..run.metrics import read_metrics

PARAM_PREFIX = "FLEET_PARAM_"
INPUTS = ("code_commit", "code_snapshot", "data", "params", "command", "environment")


@dataclass(frozen=True)
class ComparedRun:
    run_id: str
    status: str
    params: dict[str, str]
    metrics: dict[str, float]
    code_commit: str | None
    code_snapshot: str | None
    data: dict[str, str]
    command: str
    cost_usd: str | None
    gpu_hours: float | None
    trial: str | None = None
    environment: str | None = None      # which environment the run had (fleet/environment/render.py)


@dataclass(frozen=True)
class Comparison:
    runs: tuple[ComparedRun, ...]
    sort: str | None                    # the metric the order is by (None: as given)
    descending: bool = True
    differ: tuple[str, ...] = ()        # which inputs are not the same in every run
    sweep_id: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict:
        return {"sweep_id": self.sweep_id, "sort": self.sort, "descending": self.descending,
                "differ": list(self.differ), "notes": list(self.notes),
                "runs": [vars(r) for r in self.runs]}

    @property
    def param_names(self) -> list[str]:
        return _ordered(r.params for r in self.runs)

    @property
    def metric_names(self) -> list[str]:
        return _ordered(r.metrics for r in self.runs)


def _ordered(dicts) -> list[str]:
    out: list[str] = []
    for d in dicts:
        out += [k for k in d if k not in out]
    return out


def compared_run(run_id: str, state, *, trial: str | None = None) -> ComparedRun:
    from ..environment.render import environment_label
    from ..records.chain import get_record
    rec = get_record(run_id, state.db)
    try:
        row = state.get_run(rec.run_id)
        output_dir = Path(row.get("output_dir") or "")
    except Exception:  # noqa: BLE001 — a record without its state row still compares, without metrics
        output_dir = None
    params = {k[len(PARAM_PREFIX):].lower(): str(v) for k, v in (rec.env or {}).items() if k.startswith(PARAM_PREFIX)}
    hours = None
    if rec.started_at and rec.ended_at and rec.gpus:
        from datetime import datetime
        seconds = (datetime.fromisoformat(rec.ended_at) - datetime.fromisoformat(rec.started_at)).total_seconds()
        hours = round(rec.gpus * seconds / 3600, 6)
    return ComparedRun(run_id=rec.run_id, status=rec.status, params=params,
                       metrics=read_metrics(output_dir) if output_dir else {}, code_commit=rec.code_commit,
                       code_snapshot=rec.code_snapshot, data=dict(rec.data_snapshots or {}), command=rec.command,
                       cost_usd=None if rec.cost_usd is None else str(rec.cost_usd), gpu_hours=hours, trial=trial,
                       environment=environment_label(rec.environment))


def compare(run_ids: list[str], *, state, sweep_dir: Path | None = None, sort: str | None = None,
            ascending: bool = False) -> Comparison:
    """The runs named (or a sweep's trials that ran), sorted by `sort` (default: the first metric)."""
    trial_of: dict[str, str] = {}
    sweep_id = None
    notes: list[str] = []
    if sweep_dir is not None:
        from ..sweep.summary import SweepSummary
        path = sweep_dir / "sweep.json"
        if not path.is_file():
            raise NotFound(f"no sweep {sweep_dir.name!r} here ({path} does not exist)",
                           hint="run it from the experiment directory, or pass --runs-dir")
        summary = SweepSummary.read(path)
        sweep_id = summary.sweep_id
        for t in summary.trials:
            if t.run_id:
                trial_of[t.run_id] = t.trial
            else:
                notes.append(f"{t.trial} {t.state}: {t.reason or 'no run'}")
        run_ids = [*trial_of, *run_ids]
    if not run_ids:
        raise UsageError("nothing to compare", hint="fleet runs compare RUN RUN… or --sweep ID")
    runs = [compared_run(r, state, trial=trial_of.get(r)) for r in run_ids]
    metric_names = _ordered(r.metrics for r in runs)
    if sort is not None and sort not in metric_names:
        raise UsageError(f"--sort {sort!r}: no run has that metric",
                         hint=f"metrics: {', '.join(metric_names) or 'none (write metrics.json)'}")
    key = sort or (metric_names[0] if metric_names else None)
    if key is not None:   # runs without the metric go last, whatever the direction
        have = [r for r in runs if key in r.metrics]
        have.sort(key=lambda r: r.metrics[key], reverse=not ascending)
        runs = have + [r for r in runs if key not in r.metrics]
    return Comparison(runs=tuple(runs), sort=key, descending=not ascending, differ=differing(runs),
                      sweep_id=sweep_id, notes=tuple(notes))


_INPUT_OF = {"code_commit": lambda r: r.code_commit, "code_snapshot": lambda r: r.code_snapshot,
             "data": lambda r: r.data, "params": lambda r: r.params, "command": lambda r: r.command,
             "environment": lambda r: r.environment}


def differing(runs: list[ComparedRun]) -> tuple[str, ...]:
    return tuple(n for n in INPUTS if len({json.dumps(_INPUT_OF[n](r), sort_keys=True) for r in runs}) > 1)


def money(text: str | None) -> str:
    if text is None:
        return ""
    from ..money.budget import format_usd
    return format_usd(Decimal(text) * 1_000_000)
