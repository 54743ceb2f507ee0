"""`fleet status` as the shared table model (fleet/render): one row per lease view (leases.status).
Kept apart from leases.py so that `fleet status` loads only what it renders."""
from __future__ import annotations

from datetime import datetime, timezone   # not models: `fleet status` imports no dataclasses

from .render.table import Column, Table

STATUS_COLUMNS = ("lease", "provider", "launched", "user", "health", "machines", "gpus", "deadline in", "runs")
SIMULATED_NOTE = "local GPUs are simulated slots (CUDA_VISIBLE_DEVICES is set, no GPU is attached)"


def status_table(views: list[dict]):
    """`fleet status` as the shared table model (fleet/render): one row per lease."""
    now = datetime.now(timezone.utc)
    rows = []
    for v in views:             # plain loops, not comprehensions: each of those is a call (1,000 rows)
        machines, runs = v["machines"], v["runs"]
        up_count = 0
        for m in machines:
            if m["state"] == "running":
                up_count += 1
        if not runs:
            shown = "-"
        elif len(runs) == 1:
            shown = _run_cell(runs[0])
        else:
            shown = f"{_run_cell(runs[0])}, {_run_cell(runs[1])}"
        rows.append((v["id"], v["provider"], launched(v), v["user"], v["health"],
                     f"{up_count}/{len(machines)}", str(v["gpus"]), _remaining(v["deadline"], now), shown))
    columns = [Column(c, no_wrap=c in ("lease", "runs")) for c in STATUS_COLUMNS]
    return Table(columns, rows, title="fleet leases", empty="no live leases")


def _run_cell(run: dict) -> str:
    return f"{run['id']} ({run['status']}{', supervisor gone' if run.get('supervisor_gone') else ''})"


def launched(view: dict) -> str:
    """What the lease is made of: `2 × g6.12xlarge spot us-east-1a (aws-8gpu)`; just the template
    where its machines are the template itself (local)."""
    machines = view["machines"]
    if len(machines) == 1:      # most leases: the same text without grouping (1,000 rows of `fleet status`)
        m = machines[0]
        kind, zone = m.get("instance_type") or view["template"], m.get("zone", "")
        return (f"1 × {kind}" + (" spot" if m.get("lifecycle", "on-demand") == "spot" else "")
                + (f" {zone}" if zone else "") + ("" if kind == view["template"] else f" ({view['template']})"))
    groups: dict[tuple[str, str, str], int] = {}
    for m in machines:
        key = (m.get("instance_type") or view["template"], m.get("lifecycle", "on-demand"), m.get("zone", ""))
        groups[key] = groups.get(key, 0) + 1
    if not groups:
        return view["template"]
    parts = [f"{n} × {kind}" + (" spot" if lifecycle == "spot" else "") + (f" {zone}" if zone else "")
             for (kind, lifecycle, zone), n in groups.items()]
    kinds = {kind for kind, _, _ in groups}
    return ", ".join(parts) + ("" if kinds == {view["template"]} else f" ({view['template']})")


def status_notes(views: list[dict]) -> list[str]:
    from .lease_status import remembered_note
    simulated = any(m["simulated_gpus"] for v in views for m in v["machines"])
    remembered = remembered_note(views)
    return ([SIMULATED_NOTE] if simulated else []) + ([remembered] if remembered else [])


def _remaining(iso: str | None, now) -> str:
    if not iso:
        return "-"
    when = datetime.fromisoformat(iso)
    seconds = int(((when if when.tzinfo else when.replace(tzinfo=timezone.utc)) - now).total_seconds())
    if seconds <= 0:
        return "passed"
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
