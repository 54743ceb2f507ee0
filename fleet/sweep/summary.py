"""What a sweep hands back: each trial's state, and the pool's one lease, staging and cost.

Trial states: succeeded, failed (the experiment's exit code), stopped (budget, Ctrl-C or the trial
timeout stopped it while it ran), error (the machines or fleet failed), not-started (with why).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

STATES = ("succeeded", "failed", "stopped", "error", "not-started")


@dataclass(frozen=True)
class TrialResult:
    trial: str
    index: int
    params: dict[str, str]
    state: str
    run_id: str | None = None
    status: str | None = None          # the trial run's own status (RunSummary.status)
    exit_code: int | None = None
    duration_s: float | None = None
    cost_usd: str | None = None        # its share of the pool's machine time (shadow price on local machines)
    machines: tuple[str, ...] = ()
    gpus: tuple[int, ...] | None = None    # its share of its machine's GPU slots (None: whole machines)
    reason: str | None = None          # why it stopped or never started
    metrics: dict[str, float] = field(default_factory=dict)
    run_dir: str | None = None


@dataclass(frozen=True)
class SweepSummary:
    sweep_id: str
    # completed | incomplete | budget-stopped | cancelled | setup-failed | error; "running" (exit code -1)
    # while trials run: sweep.json so far, which a controller that was killed leaves as it was
    status: str
    exit_code: int
    command: str
    trials: tuple[TrialResult, ...]
    pool_run_id: str | None = None
    lease_id: str | None = None
    leases: int = 0
    machines: int = 0
    staged_bytes: int | None = None    # inputs sent to the pool's machines, once each
    budget_usd: str | None = None
    cost_usd: str | None = None        # the pool's whole lease (every trial plus boot, staging and idle)
    would_cost_usd: str | None = None
    duration_s: float | None = None
    run_dir: str | None = None
    message: str | None = None
    # Machines given back before the sweep ended (no trial left for them): machine id → when (UTC).
    released_early: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATES}
        for t in self.trials:
            out[t.state] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["counts"] = self.counts()
        return data

    def updated(self, **changes) -> "SweepSummary":
        return replace(self, **changes)

    def write(self, directory: Path) -> Path:
        """Whole or not at all (a temporary file renamed over it): it is rewritten as trials end, and
        a controller killed mid-write left it cut short."""
        import os
        path = Path(directory) / "sweep.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(f".sweep.json.{os.getpid()}")
        part.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        os.replace(part, path)
        return path

    @classmethod
    def read(cls, path: Path) -> "SweepSummary":
        """The sweep.json a sweep wrote; IntegrityError (one line) when it is not one."""
        from ..errors import IntegrityError
        try:
            data = json.loads(Path(path).read_text())
            data.pop("counts", None)
            trials = tuple(TrialResult(**{**t, "machines": tuple(t.get("machines", ())),
                                          "gpus": tuple(t["gpus"]) if t.get("gpus") is not None else None})
                           for t in data.pop("trials"))
            return cls(trials=trials, **data)
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            raise IntegrityError(f"{path} is not a sweep summary fleet wrote ({type(exc).__name__}: "
                                 f"{str(exc)[:200]})", hint="it was edited or cut short; the trials' own runs "
                                 "are still under runs/") from None
