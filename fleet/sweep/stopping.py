"""Early stopping: `--stop-if "val_loss > 2.0 after 3 epochs"` ends a hopeless trial.

The rule is read against the trial's metrics.json on its machine (node 0's FLEET_OUTPUT_DIR, the
file `fleet runs compare` reads when it comes home), which the experiment rewrites as it goes:

    METRIC OP NUMBER [after N COUNTER]       OP: > >= < <=

`after 3 epochs` waits until the file's counter (`epochs` or `epoch`) is at least 3. A file that
is missing, half-written or lacks the metric stops nothing.
"""
from __future__ import annotations

import json
import math
import operator
import re
from dataclasses import dataclass

from ..errors import UsageError
from ..run.metrics import MAX_METRICS_BYTES

_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
_RULE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(>=|<=|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
                   r"(?:\s+after\s+(\d+(?:\.\d+)?)\s+([A-Za-z_]\w*))?\s*$")
POLL_S = 3.0


@dataclass(frozen=True)
class StopRule:
    metric: str
    op: str
    threshold: float
    after: float | None = None
    counter: str | None = None

    @classmethod
    def parse(cls, text: str) -> "StopRule":
        m = _RULE.match(text or "")
        if not m:
            raise UsageError(f"--stop-if {text!r}: expected METRIC OP NUMBER [after N COUNTER]",
                             hint='e.g. --stop-if "val_loss > 2.0 after 3 epochs"')
        metric, op, number, after, counter = m.groups()
        return cls(metric, op, float(number), float(after) if after else None, counter)

    def __str__(self) -> str:
        tail = f" after {self.after:g} {self.counter}" if self.after is not None else ""
        return f"{self.metric} {self.op} {self.threshold:g}{tail}"

    def _count(self, metrics: dict) -> float | None:
        if self.counter is None:
            return None
        from ..run.metrics import finite_number
        for key in (self.counter, self.counter.rstrip("s")):
            value = finite_number(metrics.get(key))
            if value is not None:
                return value
        return None

    def verdict(self, metrics: dict) -> str | None:
        """Why the trial should stop now, or None. A metric gone NaN (a diverged loss, written as
        `NaN` by Python's json) meets every rule: it is what early stopping exists for; infinities
        compare as what they are. An integer no float holds (hostile, not a metric) decides nothing."""
        from ..run.metrics import finite_number
        value = metrics.get(self.metric)
        if not (isinstance(value, float) and not math.isfinite(value)):
            value = finite_number(value)
        if value is None:
            return None
        where = ""
        if self.after is not None:
            count = self._count(metrics)
            if count is None or count < self.after:
                return None
            where = f" at {self.counter.rstrip('s')} {count:g}"
        if value != value:
            return f"early stop: {self.metric} is NaN{where} (--stop-if {self})"
        if _OPS[self.op](value, self.threshold):
            return f"early stop: {self.metric} {value:g} {self.op} {self.threshold:g}{where} (--stop-if {self})"
        return None



def read_remote_metrics(machine, run_id: str) -> dict:
    """metrics.json of a running trial on its machine ({} when absent, not yet whole, not a
    regular file or larger than MAX_METRICS_BYTES: the experiment made it, and a FIFO or a link to
    /dev/zero there must not stall this read, which runs in the trial's tick, or fill memory)."""
    import shlex
    from ..remote.ssh import connect
    path = f"{machine.workdir}/outputs/{run_id}/metrics.json"
    try:
        with connect(machine, timeout=10) as s:
            line = (shlex.join(["test", "-f", path]) + " && "
                    + shlex.join(["head", "-c", str(MAX_METRICS_BYTES + 1), path]))
            got = s.run(line, check=False, timeout=20, deadline_s=20,
                        max_output_bytes=MAX_METRICS_BYTES + 65536)   # head's bytes, and room for an error
        too_big = len(got.stdout.encode()) > MAX_METRICS_BYTES
        data = json.loads(got.stdout) if got.exit_code == 0 and not too_big else {}
    except Exception:  # noqa: BLE001 — no reading is no verdict, never the trial's failure
        return {}
    return data if isinstance(data, dict) else {}
