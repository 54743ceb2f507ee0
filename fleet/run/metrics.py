"""metrics.json: the flat JSON of numbers an experiment writes under FLEET_OUTPUT_DIR, as it came
home with the run's outputs. Sweeps, `fleet runs compare` and the CI summary read it."""
from __future__ import annotations

import json
import math
from pathlib import Path

METRICS_FILE = "metrics.json"
MAX_METRICS_BYTES = 1 << 20   # a flat map of numbers; anything larger (a sparse file of gigabytes) is not read


def read_metrics(run_dir: Path) -> dict[str, float]:
    """The finite numbers of node 0's metrics.json (then rank 0's, for per-GPU runs); {} if none."""
    candidates = [run_dir / "node-0" / METRICS_FILE, *sorted(run_dir.glob(f"node-0/rank-0/{METRICS_FILE}"))]
    for path in candidates:
        try:
            data = json.loads(_read_bounded(path))
        except (OSError, ValueError, RecursionError):   # the experiment wrote it: anything, nested without end
            continue
        if isinstance(data, dict):
            return {str(k): f for k, v in data.items() if (f := finite_number(v)) is not None}
    return {}


def _read_bounded(path: Path) -> bytes:
    """The file's bytes, through a link (`metrics.json -> best/metrics.json`: extraction keeps links
    inside the machine's directory); OSError when it is larger than MAX_METRICS_BYTES or not a
    regular file (a FIFO would hang `fleet runs compare`)."""
    from ..regular_files import read_config_file
    return read_config_file(path, MAX_METRICS_BYTES)


def finite_number(value: object) -> float | None:
    """The value as a float when it is a finite JSON number (never a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)     # an int of 400 digits does not fit
    except OverflowError:
        return None
    return number if math.isfinite(number) else None
