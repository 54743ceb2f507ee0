"""Controller side of telemetry: reading the JSON-lines files the agent writes, once streamed home.

Each machine's file (written by fleet/remote/agent/telemetry.py) is read incrementally: only
complete new lines, a damaged line is counted and skipped. Samples are attributed to the tick in
which they *arrived*, never by the machine's own timestamps, so clock skew between controller and
machine cannot move GPU time between ticks.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .money.ledger import TickTelemetry

IDLE_PERCENT = 5.0   # a GPU below this utilisation counts as idle in reports
READ_MAX = 4 * 1024 * 1024   # bytes read per call: a sample is ~200 bytes, the file is the machine's to write


@dataclass
class TelemetryFile:
    path: Path
    offset: int = 0
    header: dict | None = None
    why: str | None = None          # why there are no GPU figures (from the agent), if it said
    bad_lines: int = 0
    last: dict | None = None        # the newest sample seen

    def read_new(self) -> list[dict]:
        """Samples appended since the last call (a partial last line waits for the next call)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read(READ_MAX)
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n")
        if end < 0:
            if len(chunk) >= READ_MAX:         # a "line" this long is not a sample: skipped, not held
                self.offset += len(chunk)
                self.bad_lines += 1
            return []
        self.offset += end + 1
        samples = []
        for raw in chunk[:end].splitlines():
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
                if not isinstance(record, dict):
                    raise ValueError("not an object")
            except ValueError:
                self.bad_lines += 1
                continue
            if "event" in record:
                if record["event"] == "start":
                    self.header = record
                if record.get("why"):
                    self.why = record["why"]
                continue
            samples.append(record)
        if samples:
            self.last = samples[-1]
        return samples


def gpu_utils(sample: dict) -> list[float]:
    """Each GPU's utilisation in percent. A machine writes these: only finite numbers count, held to
    0-100 (NaN, infinity or 1e300 made every budget tick raise before its ledger row)."""
    gpus = sample.get("gpus")
    out = []
    for gpu in gpus if isinstance(gpus, list) else ():
        try:
            util = float(gpu["util"])
        except (KeyError, TypeError, ValueError, OverflowError):
            continue
        if math.isfinite(util):
            out.append(min(100.0, max(0.0, util)))
    return out


def summarise(samples: list[dict], seconds: float, idle_percent: float = IDLE_PERCENT) -> TickTelemetry:
    """Mean GPU utilisation over the samples and idle GPU-seconds for a tick of `seconds`."""
    per_sample = [u for u in (gpu_utils(s) for s in samples) if u]
    if not per_sample:
        return TickTelemetry()
    values = [v for utils in per_sample for v in utils]
    mean = sum(values) / len(values)
    idle_fraction_gpus = sum(sum(1 for v in utils if v < idle_percent) / len(per_sample) for utils in per_sample)
    return TickTelemetry(gpu_util_permille=round(mean * 10), idle_gpu_s=round(idle_fraction_gpus * max(seconds, 0)))


def load(path: Path) -> TelemetryFile:
    tf = TelemetryFile(Path(path))
    tf.read_new()
    return tf


@dataclass
class TelemetryFeed:
    """All machines of a run: machine id → its telemetry file under the run directory."""

    paths: dict[str, Path]
    idle_percent: float = IDLE_PERCENT
    files: dict[str, TelemetryFile] = field(default_factory=dict)

    def __post_init__(self):
        self.files = {mid: TelemetryFile(Path(p)) for mid, p in self.paths.items()}

    def tick(self, seconds: float) -> dict[str, TickTelemetry]:
        return {mid: summarise(tf.read_new(), seconds, self.idle_percent) for mid, tf in self.files.items()}

    def latest_utilisations(self) -> list[float | None]:
        """One value per GPU across machines; None for a machine with no GPU figures (never idle)."""
        out: list[float | None] = []
        for tf in self.files.values():
            utils = gpu_utils(tf.last) if tf.last else []
            out.extend(utils if utils else [None])
        return out

    def reasons(self) -> dict[str, str]:
        return {mid: tf.why for mid, tf in self.files.items() if tf.why}
