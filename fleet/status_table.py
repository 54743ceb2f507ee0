"""`fleet status` as the shared table model (fleet/render): one row per lease view (leases.status).
Kept apart from leases.py so that `fleet status` loads only what it renders."""
from __future__ import annotations

from .render.table import Column, Table

STATUS_COLUMNS = ("lease", "provider", "template", "user", "health", "machines", "gpus", "deadline in", "runs")
SIMULATED_NOTE = "local GPUs are simulated slots (CUDA_VISIBLE_DEVICES is set, no GPU is attached)"


def status_table(views: list[dict]):
    """`fleet status` as the shared table model (fleet/render): one row per lease."""
    rows = []
    for v in views:
        up_count = sum(1 for m in v["machines"] if m["state"] == "running")
        runs = ", ".join(f"{r['id']} ({r['status']})" for r in v["runs"][:2])
        rows.append((v["id"], v["provider"], v["template"], v["user"], v["health"],
                     f"{up_count}/{len(v['machines'])}", str(v["gpus"]), _remaining(v["deadline"]), runs or "-"))
    columns = [Column(c, no_wrap=c in ("lease", "runs")) for c in STATUS_COLUMNS]
    return Table(columns, rows, title="fleet leases", empty="no live leases")


def status_notes(views: list[dict]) -> list[str]:
    simulated = any(m["simulated_gpus"] for v in views for m in v["machines"])
    return [SIMULATED_NOTE] if simulated else []


def _remaining(iso: str | None) -> str:
    if not iso:
        return "-"
    from .models import parse_time, utcnow
    seconds = int((parse_time(iso) - utcnow()).total_seconds())
    if seconds <= 0:
        return "passed"
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
