"""RunSummary: the one typed result of a run. summary.json, the run record, CI outputs, `fleet up
--json` and the terminal line all read it.

summary.json's keys are stable (the GitHub action and scripts read them): a field that is None is
left out, except the keys every summary has always carried.
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterator

from ..models import to_jsonable

ALWAYS = ("run_id", "lease_id", "status", "exit_code", "provider", "template", "gpus", "machines",
          "simulated_gpus", "run_dir", "started_at", "ended_at", "duration_s", "released")


@dataclass(frozen=True)
class LaunchedMachine:
    """One machine as the provider made it: what it is, how it is billed, where it runs."""

    rank: int
    id: str
    instance_type: str                # AWS: the EC2 type; local: the template; ssh: the host's GPU model
    lifecycle: str                    # "spot" | "on-demand"
    zone: str                         # AWS availability zone, ssh host ("" where it means nothing)
    gpus: int
    price_per_hour: str               # USD per machine-hour as metered (a shadow price for simulated machines)

    @classmethod
    def of(cls, machine: Any) -> "LaunchedMachine":
        """From a fleet.models.Machine."""
        return cls(rank=machine.node_rank, id=machine.id, instance_type=machine.instance_type,
                   lifecycle="spot" if machine.spot else "on-demand", zone=machine.zone,
                   gpus=len(machine.gpu_slots), price_per_hour=str(machine.price_per_hour))


def launched_mix(launched: "list[LaunchedMachine] | None") -> str:
    """`2 × g6.12xlarge (spot, us-east-1a)`: the machines as one phrase, a mix listed part by part."""
    if not launched:
        return ""
    groups: dict[tuple[str, str], list[LaunchedMachine]] = {}
    for m in launched:
        groups.setdefault((m.instance_type, m.lifecycle), []).append(m)
    parts = []
    for (kind, lifecycle), ms in groups.items():
        zones = sorted({m.zone for m in ms if m.zone})
        where = f", {', '.join(zones)}" if zones else ""
        parts.append(f"{len(ms)} × {kind or 'machine'} ({lifecycle}{where})")
    return " + ".join(parts)


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    lease_id: str
    status: str                       # succeeded | failed | setup-failed | cancelled | budget-stopped | error
    exit_code: int                    # the experiment's (first failing rank), or one of fleet's ExitCodes
    provider: str
    template: str
    gpus: int
    machines: int
    simulated_gpus: bool
    run_dir: str
    started_at: str | None = None
    ended_at: str | None = None
    duration_s: float = 0.0
    released: bool = False
    failing_rank: str | None = None
    message: str | None = None
    outputs_fetched: int | None = None
    outputs_symlinks: int | None = None    # symlinks among the outputs that came home (None: none)
    outputs_skipped: list[str] | None = None   # outputs that did not come home, each with why
    # Machines whose outputs did not all come home (transfer cut short, disk full, outputs_max):
    # "node N (machine id): why", one each; None: every machine's came home.
    outputs_incomplete: list[str] | None = None
    kept_until: str | None = None
    cost_usd: str | None = None        # what the run cost
    would_cost_usd: str | None = None  # machines with a shadow price (local): what it would have cost
    budget_usd: str | None = None
    budget_stop: str | None = None
    telemetry_note: str | None = None
    output_snapshot: str | None = None
    record_hash: str | None = None
    ci: dict[str, Any] | None = None
    rerun_of: str | None = None
    outputs_identical: bool | None = None
    outputs_differ: list[str] | None = field(default=None)
    environment_differences: list[str] | None = None   # a rerun: what its environment could not reproduce
    gpu_type: str | None = None       # what was asked for (`--gpus A100:8`), when a type was
    launched: list[LaunchedMachine] | None = None   # each machine: instance type, spot/on-demand, zone, price
    rank_exit_codes: dict[str, int] | None = None   # the command's exit code on each rank (per GPU: global rank)
    attempt: int | None = None        # a resumed run: which attempt this was (FLEET_ATTEMPT); None: the first
    checkpoints: dict[str, str] | None = None   # node rank → its latest checkpoint snapshot in the store
    machines_lost: bool | None = None   # machines vanished under the run (not the experiment's failure)
    attempts: list[dict[str, Any]] | None = None   # a recovered run: every attempt (fleet/run/recovery.py)
    # What the state database could not record of the run's end (it stayed unreachable): this file
    # is then the run's only complete account (fleet/run/state_wait.py).
    unrecorded: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    def exit_code_of(self, rank: str) -> int:
        """`fleet up --exit-code-from RANK`: that rank's own exit code when the command ran to its end
        on every rank (succeeded or failed); otherwise fleet's own code (the run did not get there)."""
        codes = self.rank_exit_codes or {}
        if self.status in ("succeeded", "failed") and rank in codes:
            return codes[rank]
        return self.exit_code

    @property
    def cost(self) -> str | None:
        """The amount, real or shadow (see `would_cost_usd`)."""
        return self.cost_usd if self.cost_usd is not None else self.would_cost_usd

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None or f.name in ALWAYS:
                out[f.name] = to_jsonable(value)
        return out

    def write(self, run_dir: Path | None = None) -> Path:
        """summary.json whole or not at all (a full disk used to leave it empty, over the last one)."""
        path = Path(run_dir or self.run_dir) / "summary.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".summary.json.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def updated(self, **changes: Any) -> "RunSummary":
        return replace(self, **changes)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunSummary":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if values.get("launched"):
            values["launched"] = [m if isinstance(m, LaunchedMachine) else LaunchedMachine(**m)
                                  for m in values["launched"]]
        return cls(**values)

    # Read-only mapping view, the shape of summary.json: code that reads the file and code that
    # holds the object index it alike (summary["exit_code"]).
    def __getitem__(self, key: str) -> Any:
        data = self.to_json()
        if key not in data:
            raise KeyError(key)
        return data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_json().get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.to_json()

    def keys(self) -> Iterator[str]:
        return iter(self.to_json())
